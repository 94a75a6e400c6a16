/* SPDX-License-Identifier: MIT */
/*
 * Bind 2 (XEP-0386): the <bind/> request of SASL2, the resource it gets
 * and the inline session features (see bind2.h). Session creation itself
 * is c2s_bind_resource(), the same as for an RFC 6120 bind.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "arena.h"
#include "bind2.h"
#include "cluster.h"
#include "c2s.h"
#include "carbons.h"
#include "conn.h"
#include "csi.h"
#include "jid.h"
#include "log.h"
#include "session.h"
#include "strbuf.h"
#include "worker.h"
#include "xml.h"

/* Domain separation for the resource derivation. */
#define BIND2_LABEL	"stanzad bind2 resource"

/* A tag is kept if it is short printable ASCII without '/' (which ends it). */
static void bind2_copy_tag(char *out, const char *text)
{
	size_t n = text ? strlen(text) : 0;

	out[0] = '\0';
	if (n == 0 || n > BIND2_TAG_MAX)
		return;
	for (size_t i = 0; i < n; i++) {
		if (text[i] < 0x21 || text[i] > 0x7e || text[i] == '/')
			return;
	}
	memcpy(out, text, n + 1);
}

void bind2_parse(struct bind2_request *r, const struct xml_node *bind)
{
	const char *v;

	memset(r, 0, sizeof(*r));
	r->present = true;
	for (const struct xml_node *ch = xml_first_element(bind); ch; ch = xml_next_element(ch)) {
		if (strcmp(ch->ns, NS_BIND2) == 0 && strcmp(ch->name, "tag") == 0) {
			/* The text nodes are in the parser's arena: read them in place. */
			char buf[BIND2_TAG_MAX + 2];
			size_t n = 0;

			for (const struct xml_node *t = ch->children; t; t = t->next) {
				if (t->name || n + t->text_len > BIND2_TAG_MAX)
					continue;
				memcpy(buf + n, t->text, t->text_len);
				n += t->text_len;
			}
			buf[n] = '\0';
			bind2_copy_tag(r->tag, buf);
		} else if (strcmp(ch->ns, NS_SM) == 0 && strcmp(ch->name, "enable") == 0) {
			r->sm_enable = true;
			v = xml_attr_get(ch, "resume");
			r->sm_resume = v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
			v = xml_attr_get(ch, "max");
			if (v && strlen(v) <= BIND2_SM_MAX_ATTR)
				snprintf(r->sm_max, sizeof(r->sm_max), "%s", v);
		} else if (strcmp(ch->ns, NS_CARBONS) == 0 && strcmp(ch->name, "enable") == 0) {
			r->carbons = true;
		} else if (strcmp(ch->ns, NS_CSI) == 0 && strcmp(ch->name, "active") == 0) {
			r->csi = 1;
		} else if (strcmp(ch->ns, NS_CSI) == 0 && strcmp(ch->name, "inactive") == 0) {
			r->csi = 2;
		}
	}
}

void bind2_features(struct strbuf *b)
{
	strbuf_puts(b, "<bind xmlns='" NS_BIND2 "'><inline>"
		       "<feature var='" NS_SM "'/>"
		       "<feature var='" NS_CARBONS "'/>"
		       "<feature var='" NS_CSI "'/>"
		       "</inline></bind>");
}

int bind2_resource(const uint8_t secret[32], const char *user, const char *ua_id,
		   const char *tag, char *out, size_t size)
{
	unsigned char mac[EVP_MAX_MD_SIZE], msg[sizeof(BIND2_LABEL) + JID_PART_MAX + 1 + 256];
	size_t ulen = strlen(user), alen = ua_id ? strlen(ua_id) : 0;
	char id[BIND2_ID_HEX + 1], raw[BIND2_TAG_MAX + BIND2_ID_HEX + 2];
	unsigned int mac_len = 0;
	bool ok = false;

	if (alen && ulen <= JID_PART_MAX && alen <= 256) {
		/* Stable per (account, client): HMAC(secret, label NUL user NUL ua_id). */
		memcpy(msg, BIND2_LABEL, sizeof(BIND2_LABEL));
		memcpy(msg + sizeof(BIND2_LABEL), user, ulen + 1);
		memcpy(msg + sizeof(BIND2_LABEL) + ulen + 1, ua_id, alen);
		ok = HMAC(EVP_sha256(), secret, 32, msg, sizeof(BIND2_LABEL) + ulen + 1 + alen, mac,
			  &mac_len) && mac_len >= BIND2_ID_HEX / 2;
	}
	if (!ok && getrandom(mac, BIND2_ID_HEX / 2, 0) != BIND2_ID_HEX / 2)
		return -EIO;
	for (size_t i = 0; i < BIND2_ID_HEX / 2; i++)
		snprintf(id + 2 * i, 3, "%02x", mac[i]);
	OPENSSL_cleanse(mac, sizeof(mac));
	if (tag && tag[0])
		snprintf(raw, sizeof(raw), "%s/%s", tag, id);
	else
		snprintf(raw, sizeof(raw), "%s", id);
	return jid_prep_resource(out, size, raw, strlen(raw)) < 0 ? -EINVAL : 0;
}

/* The <enable/> for stream management, rebuilt from the kept request. */
static void bind2_enable_sm(struct conn *c, const struct bind2_request *r, struct strbuf *out)
{
	struct arena *a = &c->w->tmp;
	struct xml_node *en = xml_node_new(a, NS_SM, "enable");

	if (!en) {
		strbuf_puts(out, "<failed xmlns='" NS_SM "'><internal-server-error xmlns='"
				 "urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
		return;
	}
	if (r->sm_resume)
		xml_attr_set(a, en, "resume", "true");
	if (r->sm_max[0])
		xml_attr_set(a, en, "max", r->sm_max);
	sm_enable_inline(c, en, out);
}

int bind2_finish(struct conn *c, const struct bind2_request *r, const char *full,
		 struct account *loaded, struct strbuf *out, const char **err)
{
	struct session *s = c2s_bind_resource(c, full, loaded, err);
	struct xml_node csi_el = { .ns = NS_CSI };

	if (!s)
		return -EAGAIN;
	strbuf_puts(out, "<bound xmlns='" NS_BIND2 "'>");
	/* XEP-0198 section 7.1: <enabled/> (or <failed/>) inside <bound/>. */
	if (r->sm_enable)
		bind2_enable_sm(c, r, out);
	/* XEP-0280 enabling cannot fail: no answer (XEP-0386 section 3). */
	if (r->carbons) {
		s->carbons = true;
		cluster_session_update(c->w, s);	/* the account's other nodes (cluster.c) */
	}
	if (r->csi) {
		csi_el.name = r->csi == 2 ? "inactive" : "active";
		csi_element(c, &csi_el);
	}
	strbuf_puts(out, "</bound>");
	log_debug("bind2.bound", "conn=%llu jid=%s sm=%s carbons=%s csi=%d",
		  (unsigned long long)c->id, s->jid, r->sm_enable ? "yes" : "no",
		  r->carbons ? "yes" : "no", r->csi);
	return 0;
}
