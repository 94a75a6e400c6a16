/* SPDX-License-Identifier: MIT */
/*
 * XEP-0092 Software Version. The operating system is left out on purpose:
 * it helps attackers more than it helps anyone else.
 */
#include <string.h>

#include "iq.h"

#ifndef STANZAD_VERSION
#define STANZAD_VERSION "0.1.0"
#endif

void version_get(struct iq_request *rq)
{
	struct arena *a = iq_arena(rq);
	struct xml_node *q = xml_node_new(a, NS_VERSION, "query");
	struct xml_node *name = q ? xml_node_add_child(a, q, NULL, "name") : NULL;
	struct xml_node *ver = q ? xml_node_add_child(a, q, NULL, "version") : NULL;

	if (!name || !ver || xml_node_add_text(a, name, "stanzad", 7) < 0 ||
	    xml_node_add_text(a, ver, STANZAD_VERSION, strlen(STANZAD_VERSION)) < 0) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	iq_reply_result(rq, q);
}
