/* SPDX-License-Identifier: MIT */
/*
 * Friendships the server makes on behalf of accounts (XEP-0347 claims,
 * XEP-0324 provisioning decisions): presence subscriptions set directly
 * in the rosters, whether the account is in memory (changed, persisted,
 * pushed to its interested resources) or not (changed in the store; a
 * completion that finds the account loaded meanwhile applies the change
 * again in memory, which is idempotent). Then the presence that such a
 * change makes visible is sent, as RFC 6121 3.1.5 does after an approval.
 *
 * Only accounts of this server are changed; other JIDs are skipped.
 */
#ifndef STANZAD_IOT_ROSTER_H
#define STANZAD_IOT_ROSTER_H

struct worker;

/*
 * a and b (normalized bare JIDs) become friends both ways: subscription
 * 'both' in each other's roster (pending requests between them dropped),
 * and each one's available resources send their presence to the other.
 */
void iot_befriend(struct worker *w, const char *a, const char *b);

/*
 * Undoes it: each is removed from the other's roster (or, for an account
 * not in memory, left with subscription 'none') and each one's available
 * resources send unavailable presence to the other.
 */
void iot_unfriend(struct worker *w, const char *a, const char *b);

/*
 * user approves contact's subscription request on its behalf: contact
 * gains From in user's roster (the pending request is dropped), is sent
 * "subscribed" from user, and the presence of user's available
 * resources.
 */
void iot_grant(struct worker *w, const char *user, const char *contact);

#endif
