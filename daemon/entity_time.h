/* SPDX-License-Identifier: MIT */
/*
 * XEP-0202 Entity Time for the server: UTC per XEP-0082 and the offset
 * +00:00. The server reports UTC whatever the host's zone: its local
 * zone means nothing to clients and says where the host is.
 */
#ifndef STANZAD_ENTITY_TIME_H
#define STANZAD_ENTITY_TIME_H

#include <stddef.h>
#include <time.h>

#include "iq.h"

#define NS_TIME			"urn:xmpp:time"
/* "CCYY-MM-DDThh:mm:ssZ" and its NUL. */
#define ENTITY_TIME_UTC_MAX	21

void entity_time_get(struct iq_request *rq);

/*
 * Formats t as an XEP-0082 DateTime in UTC ("2006-12-19T17:58:35Z").
 * Returns 0, or -EINVAL when out is too small or t is out of range.
 */
int entity_time_format(time_t t, char *out, size_t size);

#endif
