/* SPDX-License-Identifier: MIT */
/*
 * Where a remote domain's servers are (RFC 6120 3.2, XEP-0368), found on
 * a resolver thread so that a slow DNS never stalls an event loop.
 *
 * Workers queue requests; the thread resolves one at a time with the
 * blocking libresolv and getaddrinfo calls (res_nquery on a per-thread
 * resolver state) and posts each completion to the submitting worker's
 * inbox, which the loop already watches for storage completions. One
 * thread is enough: links are few and their resolutions rare (once per
 * link set-up); a resolution stuck on a dead name server holds the
 * others back for at most the resolver's own timeouts (resolv.conf).
 */
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "s2s_internal.h"

#define S2S_DNS_ANSWER_MAX	4096	/* bytes of one DNS answer read */
#define S2S_SRV_MAX		16	/* SRV records considered per service */

struct s2s_resolver {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct s2s_dns_req *head, *tail;
	bool stop;
};

/* ---- SRV answers (pure, unit-tested) ---- */

int s2s_srv_parse(const unsigned char *msg, int len, struct s2s_srv *out, unsigned max)
{
	ns_msg handle;
	ns_rr rr;
	unsigned n = 0;
	int count;

	if (len <= 0 || ns_initparse(msg, len, &handle) < 0)
		return -EINVAL;
	count = ns_msg_count(handle, ns_s_an);
	for (int i = 0; i < count && n < max; i++) {
		const unsigned char *rd;
		struct s2s_srv *s = &out[n];

		if (ns_parserr(&handle, ns_s_an, i, &rr) < 0)
			return -EINVAL;
		if (ns_rr_type(rr) != ns_t_srv || ns_rr_class(rr) != ns_c_in)
			continue;
		if (ns_rr_rdlen(rr) < 7)
			return -EINVAL;
		rd = ns_rr_rdata(rr);
		s->priority = (uint16_t)(rd[0] << 8 | rd[1]);
		s->weight = (uint16_t)(rd[2] << 8 | rd[3]);
		s->port = (uint16_t)(rd[4] << 8 | rd[5]);
		/* The target is a (possibly compressed) name inside the message. */
		if (dn_expand(ns_msg_base(handle), ns_msg_end(handle), rd + 6, s->target,
			      sizeof(s->target)) < 0)
			return -EINVAL;
		/* RFC 2782: a lone "." means the service is decidedly not offered. */
		if (!s->target[0] || strcmp(s->target, ".") == 0 || s->port == 0)
			continue;
		n++;
	}
	return (int)n;
}

static int s2s_srv_cmp(const void *a, const void *b)
{
	const struct s2s_srv *x = a, *y = b;

	if (x->priority != y->priority)
		return x->priority < y->priority ? -1 : 1;
	if (x->weight != y->weight)
		return x->weight > y->weight ? -1 : 1;
	return 0;
}

void s2s_srv_sort(struct s2s_srv *srv, unsigned n)
{
	/*
	 * RFC 2782 picks among equal priorities at random by weight; the
	 * heaviest first is the same order on average and keeps one link's
	 * attempts deterministic (and testable).
	 */
	qsort(srv, n, sizeof(*srv), s2s_srv_cmp);
}

/* ---- Resolution (resolver thread) ---- */

/* Adds the addresses of host:port; returns the new count. */
static unsigned s2s_add_host(const char *host, uint16_t port, bool direct_tls,
			     struct s2s_addr *out, unsigned n, unsigned max)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	char service[8];

	snprintf(service, sizeof(service), "%u", port);
	if (getaddrinfo(host, service, &hints, &res) != 0)
		return n;
	for (ai = res; ai && n < max; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof(out[n].ss))
			continue;
		memset(&out[n], 0, sizeof(out[n]));
		memcpy(&out[n].ss, ai->ai_addr, ai->ai_addrlen);
		out[n].len = ai->ai_addrlen;
		out[n].direct_tls = direct_tls;
		n++;
	}
	freeaddrinfo(res);
	return n;
}

/* SRV records of one service name; -1 when the query failed (no such name). */
static int s2s_query_srv(res_state rs, const char *name, struct s2s_srv *srv, unsigned max)
{
	unsigned char *answer = malloc(S2S_DNS_ANSWER_MAX);
	int len, n;

	if (!answer)
		return -1;
	len = res_nquery(rs, name, ns_c_in, ns_t_srv, answer, S2S_DNS_ANSWER_MAX);
	n = len < 0 ? -1 : s2s_srv_parse(answer, len, srv, max);
	free(answer);
	return n < 0 ? -1 : n;
}

/* Whether name is under the special-use TLD "invalid" (RFC 6761 6.4). */
static bool s2s_name_invalid(const char *name)
{
	size_t n = strlen(name);

	return (n == 7 && strcmp(name, "invalid") == 0) ||
	       (n > 8 && strcmp(name + n - 8, ".invalid") == 0);
}

unsigned s2s_resolve(const char *domain, struct s2s_addr *out, unsigned max)
{
	static const struct {
		const char *prefix;
		bool direct_tls;
	} services[] = {
		{ "_xmpps-server._tcp.", true },	/* XEP-0368 first: no STARTTLS round trip */
		{ "_xmpp-server._tcp.", false },
	};
	struct s2s_srv *srv;
	struct __res_state rs;
	char name[JID_PART_MAX + 32];
	unsigned n = 0;
	bool any_srv = false;

	if (s2s_name_invalid(domain))
		return 0;
	srv = calloc(S2S_SRV_MAX, sizeof(*srv));
	if (!srv)
		return 0;
	memset(&rs, 0, sizeof(rs));
	if (res_ninit(&rs) == 0) {
		for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
			int k;

			snprintf(name, sizeof(name), "%s%s", services[i].prefix, domain);
			k = s2s_query_srv(&rs, name, srv, S2S_SRV_MAX);
			if (k <= 0)
				continue;
			any_srv = true;
			s2s_srv_sort(srv, (unsigned)k);
			for (int j = 0; j < k && n < max; j++)
				n = s2s_add_host(srv[j].target, srv[j].port, services[i].direct_tls, out,
						 n, max);
		}
		res_nclose(&rs);
	}
	free(srv);
	/* RFC 6120 3.2.1: no SRV records at all means the domain itself, port 5269. */
	if (!any_srv)
		n = s2s_add_host(domain, S2S_DEFAULT_PORT, false, out, n, max);
	return n;
}

/* ---- The thread ---- */

static void *s2s_resolver_main(void *arg)
{
	struct s2s_resolver *r = arg;

	for (;;) {
		struct s2s_dns_req *dr;

		pthread_mutex_lock(&r->lock);
		while (!r->head && !r->stop)
			pthread_cond_wait(&r->cond, &r->lock);
		dr = r->head;
		if (dr) {
			r->head = dr->qnext;
			if (!r->head)
				r->tail = NULL;
		}
		pthread_mutex_unlock(&r->lock);
		if (!dr)
			break;	/* stopping and nothing left */
		dr->naddrs = s2s_resolve(dr->domain, dr->addrs, S2S_ADDRS_MAX);
		dr->req.result = dr->naddrs ? 0 : -EHOSTUNREACH;
		storage_inbox_post(&dr->req);
	}
	return NULL;
}

struct s2s_resolver *s2s_resolver_start(void)
{
	struct s2s_resolver *r = calloc(1, sizeof(*r));
	int ret;

	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	ret = pthread_create(&r->thread, NULL, s2s_resolver_main, r);
	if (ret) {
		pthread_cond_destroy(&r->cond);
		pthread_mutex_destroy(&r->lock);
		free(r);
		errno = ret;
		return NULL;
	}
	pthread_setname_np(r->thread, "stanzad-dns");
	return r;
}

void s2s_resolver_submit(struct s2s_resolver *r, struct s2s_dns_req *dr)
{
	dr->qnext = NULL;
	pthread_mutex_lock(&r->lock);
	if (r->tail)
		r->tail->qnext = dr;
	else
		r->head = dr;
	r->tail = dr;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/*
 * Finishes what is queued (its completions reach the inboxes, which the
 * workers drain at their destruction), then joins the thread.
 */
void s2s_resolver_stop(struct s2s_resolver *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r);
}
