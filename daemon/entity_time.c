/* SPDX-License-Identifier: MIT */
/* XEP-0202 Entity Time for the server; see entity_time.h. */
#include <errno.h>
#include <string.h>

#include "entity_time.h"

int entity_time_format(time_t t, char *out, size_t size)
{
	struct tm tm;

	if (size < ENTITY_TIME_UTC_MAX || !gmtime_r(&t, &tm))
		return -EINVAL;
	/* Four-digit years only: XEP-0082 has no room for more. */
	if (tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
		return -EINVAL;
	if (strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) != ENTITY_TIME_UTC_MAX - 1)
		return -EINVAL;
	return 0;
}

/* <time><tzo>+00:00</tzo><utc>...Z</utc></time>: the server always speaks UTC. */
void entity_time_get(struct iq_request *rq)
{
	struct arena *a = iq_arena(rq);
	char utc[ENTITY_TIME_UTC_MAX];
	struct xml_node *t, *tzo, *u;

	if (entity_time_format(time(NULL), utc, sizeof(utc)) < 0) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	t = xml_node_new(a, NS_TIME, "time");
	tzo = t ? xml_node_add_child(a, t, NULL, "tzo") : NULL;
	u = t ? xml_node_add_child(a, t, NULL, "utc") : NULL;
	if (!tzo || !u || xml_node_add_text(a, tzo, "+00:00", 6) < 0 ||
	    xml_node_add_text(a, u, utc, strlen(utc)) < 0) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	iq_reply_result(rq, t);
}
