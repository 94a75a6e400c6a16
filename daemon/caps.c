/* SPDX-License-Identifier: MIT */
/* XEP-0115 Entity Capabilities of the server; see caps.h. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "caps.h"
#include "iq.h"
#include "log.h"
#include "pubsub.h"

const struct caps_identity caps_server_identities[] = {
	{ .category = "server", .type = "im", .lang = NULL, .name = "stanzad" },
	{ .category = "pubsub", .type = "pep", .lang = NULL, .name = NULL },
};
const size_t caps_server_nidentities =
	sizeof(caps_server_identities) / sizeof(caps_server_identities[0]);

/* "i;octet" collation (RFC 4790 9.3) is plain byte order: strcmp. */
static int caps_cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int caps_cmp_identity(const void *pa, const void *pb)
{
	const struct caps_identity *a = *(const struct caps_identity *const *)pa;
	const struct caps_identity *b = *(const struct caps_identity *const *)pb;
	int r = strcmp(a->category, b->category);

	if (!r)
		r = strcmp(a->type, b->type);
	if (!r)
		r = strcmp(a->lang ? a->lang : "", b->lang ? b->lang : "");
	return r;
}

/*
 * Sorts in place and drops repeats; returns the new count. A repeated
 * feature makes clients reject the whole answer (XEP-0115 5.4,
 * "Processing Method"), and two handler-table entries may share one.
 */
static size_t caps_sort_unique(const char **v, size_t n)
{
	size_t out = 0;

	qsort(v, n, sizeof(*v), caps_cmp_str);
	for (size_t i = 0; i < n; i++)
		if (!out || strcmp(v[out - 1], v[i]) != 0)
			v[out++] = v[i];
	return out;
}

/*
 * The server's extended information forms as XEP-0115 5.1 steps 6-8 put
 * them into S (set once, before the first 'ver'), or NULL: none.
 */
static const char *caps_server_forms;

void caps_server_set_forms(const char *s)
{
	caps_server_forms = s;
}

/* caps_ver_compute, with `forms` (steps 6-8, or NULL) appended to S. */
static int caps_ver_compute_forms(const struct caps_identity *ids, size_t nids,
				  const char *const *features, size_t nfeatures, const char *forms,
				  char *out, size_t out_size)
{
	const struct caps_identity **idv = NULL;
	const char **fv = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	struct strbuf s = STRBUF_INIT;
	unsigned mdlen = 0;
	int ret = -ENOMEM;

	if (!nids || out_size < CAPS_VER_MAX)
		return -EINVAL;
	for (size_t i = 0; i < nids; i++)
		if (!ids[i].category || !ids[i].type)
			return -EINVAL;
	for (size_t i = 0; i < nfeatures; i++)
		if (!features[i])
			return -EINVAL;
	idv = malloc(nids * sizeof(*idv));
	fv = malloc((nfeatures ? nfeatures : 1) * sizeof(*fv));
	if (!idv || !fv)
		goto out;
	for (size_t i = 0; i < nids; i++)
		idv[i] = &ids[i];
	qsort(idv, nids, sizeof(*idv), caps_cmp_identity);
	if (nfeatures)
		memcpy(fv, features, nfeatures * sizeof(*fv));
	nfeatures = caps_sort_unique(fv, nfeatures);

	/* S = category/type/lang/name< ... feature< ... (steps 1-5). */
	for (size_t i = 0; i < nids; i++) {
		strbuf_puts(&s, idv[i]->category);
		strbuf_puts(&s, "/");
		strbuf_puts(&s, idv[i]->type);
		strbuf_puts(&s, "/");
		strbuf_puts(&s, idv[i]->lang ? idv[i]->lang : "");
		strbuf_puts(&s, "/");
		strbuf_puts(&s, idv[i]->name ? idv[i]->name : "");
		strbuf_puts(&s, "<");
	}
	for (size_t i = 0; i < nfeatures; i++) {
		strbuf_puts(&s, fv[i]);
		strbuf_puts(&s, "<");
	}
	if (forms)
		strbuf_puts(&s, forms);
	if (s.oom || !s.data)
		goto out;
	/* Step 9: SHA-1 over the UTF-8 bytes, base64 without line breaks. */
	if (EVP_Digest(s.data, s.len, md, &mdlen, EVP_sha1(), NULL) != 1) {
		ret = -EIO;
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
	ret = 0;
out:
	strbuf_free(&s);
	free(fv);
	free(idv);
	return ret;
}

int caps_ver_compute(const struct caps_identity *ids, size_t nids,
		     const char *const *features, size_t nfeatures, char *out, size_t out_size)
{
	return caps_ver_compute_forms(ids, nids, features, nfeatures, NULL, out, out_size);
}

/*
 * The caps feature itself is the server's only: it is what the stream
 * feature offers, and XEP-0115 5.2 hashes it like any other feature.
 */
size_t caps_features(unsigned scope, const char **out, size_t cap)
{
	size_t n = iq_features(scope, out, cap);

	if ((scope & IQ_SCOPE_SERVER) && n < cap)
		out[n++] = NS_CAPS;
	n += pubsub_disco_features(scope, out + n, cap - n);	/* XEP-0163 (pubsub.c) */
	return caps_sort_unique(out, n);
}

/*
 * Computed once per process: the handler table is constant, and workers
 * on several threads may ask first (hence pthread_once, not a flag).
 */
static char caps_ver_buf[CAPS_VER_MAX];
static pthread_once_t caps_once = PTHREAD_ONCE_INIT;

static void caps_init(void)
{
	const char *features[CAPS_MAX_FEATURES];
	size_t n = caps_features(IQ_SCOPE_SERVER, features, CAPS_MAX_FEATURES);
	int ret = caps_ver_compute_forms(caps_server_identities, caps_server_nidentities, features,
					 n, caps_server_forms, caps_ver_buf, sizeof(caps_ver_buf));

	if (ret < 0) {
		caps_ver_buf[0] = '\0';
		log_error("caps.hash_failed", "err=%d", ret);
	}
}

const char *caps_server_ver(void)
{
	pthread_once(&caps_once, caps_init);
	return caps_ver_buf;
}

bool caps_is_server_node(const char *node)
{
	const char *ver = caps_server_ver();
	size_t n = strlen(CAPS_NODE);

	return ver[0] && strncmp(node, CAPS_NODE, n) == 0 && node[n] == '#' &&
	       strcmp(node + n + 1, ver) == 0;
}

void caps_stream_feature(struct strbuf *b)
{
	const char *ver = caps_server_ver();

	if (!ver[0])
		return;
	/* The base64 alphabet and the node need no escaping in an attribute. */
	strbuf_puts(b, "<c xmlns='" NS_CAPS "' hash='" CAPS_HASH "' node='" CAPS_NODE "' ver='");
	strbuf_puts(b, ver);
	strbuf_puts(b, "'/>");
}
