/* SPDX-License-Identifier: MIT */
/*
 * Occupant identifiers (XEP-0421): every presence and message a room
 * sends on behalf of an occupant carries <occupant-id id='...'/>, the
 * same for one real bare JID in one room whatever its nickname, and
 * different in another room.
 *
 * The id is HMAC-SHA-256(service key, room JID NUL real bare JID), its
 * first 16 bytes in unpadded base64url (22 characters): stable, unique,
 * and not reversible without the key (section 4.1). The key lives in
 * STATE_DIR/muc-occupant-id.key (32 random bytes, mode 0600) so that ids
 * survive restarts, as the room history and archive that carry them do.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "jid.h"
#include "log.h"
#include "muc.h"
#include "muc_room.h"
#include "xml.h"

#define OCCID_KEY_FILE	"muc-occupant-id.key"
#define OCCID_RAW	16	/* bytes of the HMAC kept: 128 bits */

/* Reads the key; 0, or -ENOENT when there is none yet, or another -errno. */
static int occid_key_read(const char *path, uint8_t key[MUC_OCCID_KEY_LEN])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, key, MUC_OCCID_KEY_LEN);
	close(fd);
	if (n < 0)
		return -errno;
	return n == MUC_OCCID_KEY_LEN ? 0 : -EINVAL;
}

/* Writes a new key durably: temporary file, fsync, rename. 0 or -errno. */
static int occid_key_create(const char *dir, const char *path, uint8_t key[MUC_OCCID_KEY_LEN])
{
	char tmp[4096];
	int fd, ret = 0;

	if (getrandom(key, MUC_OCCID_KEY_LEN, 0) != MUC_OCCID_KEY_LEN)
		return -EIO;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, OCCID_KEY_FILE) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, key, MUC_OCCID_KEY_LEN) != MUC_OCCID_KEY_LEN || fsync(fd) < 0)
		ret = errno ? -errno : -EIO;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

void muc_occupant_id_init(struct muc_service *svc)
{
	const char *dir = svc->cfg->state_dir;
	char path[4096];
	int ret;

	if (!dir) {
		ret = -ENOENT;	/* no state directory (unit tests) */
	} else if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, OCCID_KEY_FILE) >=
		   sizeof(path)) {
		ret = -ENAMETOOLONG;
	} else {
		ret = occid_key_read(path, svc->occid_key);
		if (ret == -ENOENT)
			ret = occid_key_create(dir, path, svc->occid_key);
	}
	if (ret == 0)
		return;
	/* Still pseudonymous and unique; only stability across restarts is lost. */
	log_error("muc.occupant_id_key", "path=%s/%s err=\"%s\" msg=\"using a key for this run "
		  "only: occupant ids change at the next restart\"", dir ? dir : "-",
		  OCCID_KEY_FILE, strerror(-ret));
	if (getrandom(svc->occid_key, MUC_OCCID_KEY_LEN, 0) != MUC_OCCID_KEY_LEN)
		memset(svc->occid_key, 0, MUC_OCCID_KEY_LEN);
}

void muc_occupant_id_make(const struct muc_service *svc, const struct muc_room *room,
			  const char *bare, size_t bare_len, char out[MUC_OCCID_LEN + 1])
{
	size_t rl = strlen(room->jid);
	unsigned char msg[2 * JID_MAX + 1];
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned mac_len = 0;
	char b64[32];

	/* room JID NUL bare JID: no two pairs of JIDs give the same input. */
	if (rl > JID_MAX)
		rl = JID_MAX;
	if (bare_len > JID_MAX)
		bare_len = JID_MAX;
	memcpy(msg, room->jid, rl);
	msg[rl] = '\0';
	memcpy(msg + rl + 1, bare, bare_len);
	if (!HMAC(EVP_sha256(), svc->occid_key, MUC_OCCID_KEY_LEN, msg, rl + 1 + bare_len, mac,
		  &mac_len))
		memset(mac, 0, sizeof(mac));
	EVP_EncodeBlock((unsigned char *)b64, mac, OCCID_RAW);
	for (size_t i = 0; i < MUC_OCCID_LEN; i++)
		out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
	out[MUC_OCCID_LEN] = '\0';
	OPENSSL_cleanse(mac, sizeof(mac));
}

int muc_occupant_id_stamp(struct muc_ctx *c, const struct muc_room *room,
			  const struct muc_occupant *occ, struct xml_node *st)
{
	struct xml_node *ch = xml_first_element(st), *next, *id;
	char value[MUC_OCCID_LEN + 1];

	/* Section 5: a claim of the sender's is replaced, never passed on. */
	for (; ch; ch = next) {
		next = xml_next_element(ch);
		if (strcmp(ch->ns, NS_OCCUPANT_ID) == 0)
			xml_node_remove(ch);
	}
	muc_occupant_id_make(c->svc, room, occ->jid, occ->bare_len, value);
	id = xml_node_add_child(c->a, st, NS_OCCUPANT_ID, "occupant-id");
	if (!id || xml_attr_set(c->a, id, "id", value) < 0)
		return -ENOMEM;
	return 0;
}
