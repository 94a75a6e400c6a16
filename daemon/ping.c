/* SPDX-License-Identifier: MIT */
/* XEP-0199 XMPP Ping: the server answers pings addressed to it. */
#include "iq.h"

void ping_get(struct iq_request *rq)
{
	iq_reply_result(rq, NULL);
}
