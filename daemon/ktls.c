/* SPDX-License-Identifier: MIT */
/*
 * kTLS key derivation, probing and installation. See ktls.h.
 *
 * Why the keys are derived here instead of by OpenSSL: Debian 12's
 * OpenSSL 3.0 only enables kTLS on socket BIOs, and never for TLS 1.3
 * receive. stanzad's handshake runs on buffers lent by io_uring, so it
 * takes the traffic secrets (TLS 1.3, from the keylog callback) or the
 * master secret and hello randoms (TLS 1.2) and computes what the kernel
 * needs itself, with OpenSSL's KDFs (HKDF, TLS1-PRF).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "ktls.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define KTLS_LABEL_MAX		255	/* HkdfLabel.label is opaque<7..255> */
#define KTLS_CONTEXT_MAX	255	/* HkdfLabel.context is opaque<0..255> */
#define KTLS_TLS13_PREFIX	"tls13 "
#define KTLS_IV_LEN		12	/* AEAD nonce of every suite here */
#define KTLS_GCM_SALT_LEN	4	/* TLS 1.2 GCM implicit part of the nonce */
#define KTLS_KEY_BLOCK_MAX	(2 * 32 + 2 * KTLS_IV_LEN)
#define KTLS_PROBE_TIMEOUT_MS	1000	/* a probe record must cross loopback in this */
#define KTLS_PROBE_TEXT		"stanzad-ktls-probe"

/* ---- Cipher table ---- */

struct ktls_suite {
	const char *name;
	const char *digest;		/* HKDF / PRF hash */
	uint16_t kernel_cipher;		/* TLS_CIPHER_* */
	uint8_t key_len;
	uint8_t salt_len;		/* implicit nonce part in crypto_info.salt */
	uint8_t iv_len;			/* crypto_info.iv */
	uint8_t tls12_fixed_iv;		/* TLS 1.2 key-block IV bytes (RFC 5288 / 7905) */
	size_t info_size;
};

static const struct ktls_suite ktls_suites[KTLS_CIPHER_COUNT + 1] = {
	[KTLS_AES_128_GCM] = { "AES-128-GCM", "SHA256", TLS_CIPHER_AES_GCM_128,
			       TLS_CIPHER_AES_GCM_128_KEY_SIZE, TLS_CIPHER_AES_GCM_128_SALT_SIZE,
			       TLS_CIPHER_AES_GCM_128_IV_SIZE, KTLS_GCM_SALT_LEN,
			       sizeof(struct tls12_crypto_info_aes_gcm_128) },
	[KTLS_AES_256_GCM] = { "AES-256-GCM", "SHA384", TLS_CIPHER_AES_GCM_256,
			       TLS_CIPHER_AES_GCM_256_KEY_SIZE, TLS_CIPHER_AES_GCM_256_SALT_SIZE,
			       TLS_CIPHER_AES_GCM_256_IV_SIZE, KTLS_GCM_SALT_LEN,
			       sizeof(struct tls12_crypto_info_aes_gcm_256) },
	[KTLS_CHACHA20_POLY1305] = { "CHACHA20-POLY1305", "SHA256", TLS_CIPHER_CHACHA20_POLY1305,
				     TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE,
				     TLS_CIPHER_CHACHA20_POLY1305_SALT_SIZE,
				     TLS_CIPHER_CHACHA20_POLY1305_IV_SIZE, KTLS_IV_LEN,
				     sizeof(struct tls12_crypto_info_chacha20_poly1305) },
};

static const struct ktls_suite *ktls_suite(enum ktls_cipher c)
{
	if (c <= KTLS_CIPHER_NONE || c > KTLS_CIPHER_COUNT)
		return NULL;
	return &ktls_suites[c];
}

const char *ktls_cipher_name(enum ktls_cipher c)
{
	const struct ktls_suite *s = ktls_suite(c);

	return s ? s->name : "none";
}

size_t ktls_info_size(enum ktls_cipher c)
{
	const struct ktls_suite *s = ktls_suite(c);

	return s ? s->info_size : 0;
}

/*
 * The fields of the kernel struct for a suite. All three structs share
 * the layout {info, iv, key, salt, rec_seq} with different sizes, so the
 * pointers are taken from the member that matches.
 */
struct ktls_fields {
	uint8_t *iv, *key, *salt, *rec_seq;
};

static void ktls_fields_of(enum ktls_cipher c, union ktls_crypto_info *ci, struct ktls_fields *f)
{
	switch (c) {
	case KTLS_AES_128_GCM:
		*f = (struct ktls_fields){ ci->aes128.iv, ci->aes128.key, ci->aes128.salt,
					   ci->aes128.rec_seq };
		break;
	case KTLS_AES_256_GCM:
		*f = (struct ktls_fields){ ci->aes256.iv, ci->aes256.key, ci->aes256.salt,
					   ci->aes256.rec_seq };
		break;
	default:
		*f = (struct ktls_fields){ ci->chacha.iv, ci->chacha.key, ci->chacha.salt,
					   ci->chacha.rec_seq };
		break;
	}
}

static void ktls_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

/* ---- KDFs (fetched once: a fetch takes a global lock) ---- */

static EVP_KDF *ktls_hkdf, *ktls_prf;
static pthread_once_t ktls_kdf_once = PTHREAD_ONCE_INIT;

static void ktls_kdf_init(void)
{
	ktls_hkdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
	ktls_prf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_PRF, NULL);
}

/* Runs one KDF derivation with params; 0 or -EIO. */
static int ktls_kdf_run(EVP_KDF *kdf, const OSSL_PARAM *params, uint8_t *out, size_t out_len)
{
	EVP_KDF_CTX *kctx;
	int ok;

	if (!kdf)
		return -EIO;
	kctx = EVP_KDF_CTX_new(kdf);
	if (!kctx)
		return -EIO;
	ok = EVP_KDF_derive(kctx, out, out_len, params);
	EVP_KDF_CTX_free(kctx);
	return ok == 1 ? 0 : -EIO;
}

int ktls_hkdf_expand_label(enum ktls_cipher c, const uint8_t *secret, size_t secret_len,
			   const char *label, const uint8_t *context, size_t context_len,
			   uint8_t *out, size_t out_len)
{
	const struct ktls_suite *s = ktls_suite(c);
	/* struct HkdfLabel { uint16 length; opaque label<7..255>; opaque context<0..255>; } */
	uint8_t info[2 + 1 + KTLS_LABEL_MAX + 1 + KTLS_CONTEXT_MAX];
	size_t label_len = label ? strlen(label) : 0;
	size_t full_label = sizeof(KTLS_TLS13_PREFIX) - 1 + label_len;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM params[5];
	size_t n = 0;

	if (!s || !secret || !out || out_len > 0xffff || full_label > KTLS_LABEL_MAX ||
	    context_len > KTLS_CONTEXT_MAX || (context_len && !context))
		return -EINVAL;
	pthread_once(&ktls_kdf_once, ktls_kdf_init);

	info[n++] = (uint8_t)(out_len >> 8);
	info[n++] = (uint8_t)out_len;
	info[n++] = (uint8_t)full_label;
	memcpy(info + n, KTLS_TLS13_PREFIX, sizeof(KTLS_TLS13_PREFIX) - 1);
	n += sizeof(KTLS_TLS13_PREFIX) - 1;
	memcpy(info + n, label, label_len);
	n += label_len;
	info[n++] = (uint8_t)context_len;
	if (context_len)
		memcpy(info + n, context, context_len);
	n += context_len;

	params[0] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)s->digest, 0);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n);
	params[4] = OSSL_PARAM_construct_end();
	return ktls_kdf_run(ktls_hkdf, params, out, out_len);
}

/* Fills the header, the nonce parts from a 12-byte IV, and the sequence. */
static void ktls_fill(enum ktls_cipher c, uint16_t version, const uint8_t *key,
		      const uint8_t *salt, const uint8_t *iv, uint64_t seq,
		      union ktls_crypto_info *out)
{
	const struct ktls_suite *s = ktls_suite(c);
	struct ktls_fields f;

	memset(out, 0, sizeof(*out));
	out->info.version = version;
	out->info.cipher_type = s->kernel_cipher;
	ktls_fields_of(c, out, &f);
	memcpy(f.key, key, s->key_len);
	if (s->salt_len)
		memcpy(f.salt, salt, s->salt_len);
	memcpy(f.iv, iv, s->iv_len);
	ktls_put_be64(f.rec_seq, seq);
}

int ktls_tls13_info(enum ktls_cipher c, const uint8_t *secret, size_t secret_len, uint64_t seq,
		    union ktls_crypto_info *out)
{
	const struct ktls_suite *s = ktls_suite(c);
	uint8_t key[32], iv[KTLS_IV_LEN];
	int ret;

	if (!s || !out)
		return -EINVAL;
	ret = ktls_hkdf_expand_label(c, secret, secret_len, "key", NULL, 0, key, s->key_len);
	if (ret == 0)
		ret = ktls_hkdf_expand_label(c, secret, secret_len, "iv", NULL, 0, iv, sizeof(iv));
	if (ret == 0) {
		/*
		 * The kernel builds the nonce as (salt || iv) XOR seq; the
		 * 12-byte IV of RFC 8446 5.3 splits the same way.
		 */
		ktls_fill(c, TLS_1_3_VERSION, key, iv, iv + s->salt_len, seq, out);
	}
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(iv, sizeof(iv));
	return ret;
}

int ktls_tls12_key_block(enum ktls_cipher c, const uint8_t *master, size_t master_len,
			 const uint8_t client_random[KTLS_RANDOM_LEN],
			 const uint8_t server_random[KTLS_RANDOM_LEN], uint8_t *out, size_t out_len)
{
	static const char label[] = "key expansion";
	const struct ktls_suite *s = ktls_suite(c);
	OSSL_PARAM params[6];

	if (!s || !master || !client_random || !server_random || !out)
		return -EINVAL;
	pthread_once(&ktls_kdf_once, ktls_kdf_init);
	/* The seed parameters are concatenated in order. */
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)s->digest, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, (void *)master, master_len);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)label,
						      sizeof(label) - 1);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)server_random,
						      KTLS_RANDOM_LEN);
	params[4] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)client_random,
						      KTLS_RANDOM_LEN);
	params[5] = OSSL_PARAM_construct_end();
	return ktls_kdf_run(ktls_prf, params, out, out_len);
}

int ktls_tls12_info(enum ktls_cipher c, const uint8_t *master, size_t master_len,
		    const uint8_t client_random[KTLS_RANDOM_LEN],
		    const uint8_t server_random[KTLS_RANDOM_LEN], bool server_write, uint64_t seq,
		    union ktls_crypto_info *out)
{
	const struct ktls_suite *s = ktls_suite(c);
	uint8_t block[KTLS_KEY_BLOCK_MAX], explicit_nonce[8];
	const uint8_t *key, *fixed;
	size_t len;
	int ret;

	if (!s || !out)
		return -EINVAL;
	/*
	 * AEAD suites have no MAC keys: client_write_key, server_write_key,
	 * client_write_IV, server_write_IV (RFC 5246 6.3, RFC 5288 3).
	 */
	len = 2 * (size_t)s->key_len + 2 * (size_t)s->tls12_fixed_iv;
	ret = ktls_tls12_key_block(c, master, master_len, client_random, server_random, block, len);
	if (ret < 0)
		goto out;
	key = block + (server_write ? s->key_len : 0);
	fixed = block + 2 * s->key_len + (server_write ? s->tls12_fixed_iv : 0);
	if (c == KTLS_CHACHA20_POLY1305) {
		/* RFC 7905: the whole 12-byte IV is XORed with the sequence. */
		ktls_fill(c, TLS_1_2_VERSION, key, NULL, fixed, seq, out);
	} else {
		/*
		 * RFC 5288: salt = the 4 fixed bytes, then an 8-byte explicit
		 * nonce sent in each record. Starting it at the sequence number
		 * keeps it unique: the kernel increments both per record.
		 */
		ktls_put_be64(explicit_nonce, seq);
		ktls_fill(c, TLS_1_2_VERSION, key, fixed, explicit_nonce, seq, out);
	}
out:
	OPENSSL_cleanse(block, sizeof(block));
	return ret;
}

/* ---- Installing ---- */

/* The suite of a filled crypto_info (by its kernel cipher number). */
static enum ktls_cipher ktls_cipher_of(const union ktls_crypto_info *ci)
{
	for (int c = 1; c <= KTLS_CIPHER_COUNT; c++)
		if (ktls_suites[c].kernel_cipher == ci->info.cipher_type)
			return (enum ktls_cipher)c;
	return KTLS_CIPHER_NONE;
}

const char *ktls_step_name(enum ktls_step step)
{
	static const char *const names[] = {
		[KTLS_STEP_ULP] = "TCP_ULP", [KTLS_STEP_TX] = "TLS_TX",
		[KTLS_STEP_RX] = "TLS_RX", [KTLS_STEP_DONE] = "done",
	};

	return step <= KTLS_STEP_DONE ? names[step] : "?";
}

int ktls_install(int fd, const union ktls_crypto_info *tx, const union ktls_crypto_info *rx,
		 enum ktls_step *step)
{
	static const char ulp[] = "tls";
	size_t tx_size = ktls_info_size(ktls_cipher_of(tx));
	size_t rx_size = ktls_info_size(ktls_cipher_of(rx));

	*step = KTLS_STEP_ULP;
	if (!tx_size || !rx_size)
		return -EINVAL;
	if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, sizeof(ulp) - 1) < 0)
		return -errno;
	/*
	 * With the ULP but no keys the socket still passes bytes through
	 * untouched, so a TX failure leaves userspace TLS possible.
	 */
	*step = KTLS_STEP_TX;
	if (setsockopt(fd, SOL_TLS, TLS_TX, tx, (socklen_t)tx_size) < 0)
		return -errno;
	*step = KTLS_STEP_RX;
	if (setsockopt(fd, SOL_TLS, TLS_RX, rx, (socklen_t)rx_size) < 0)
		return -errno;
	*step = KTLS_STEP_DONE;
	return 0;
}

int ktls_send_alert(int fd, uint8_t level, uint8_t description)
{
	uint8_t alert[2] = { level, description };
	union {
		char buf[CMSG_SPACE(sizeof(uint8_t))];
		struct cmsghdr align;
	} control;
	struct iovec iov = { alert, sizeof(alert) };
	struct msghdr msg = { 0 };
	struct cmsghdr *cmsg;

	memset(&control, 0, sizeof(control));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof(control.buf);
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_TLS;
	cmsg->cmsg_type = TLS_SET_RECORD_TYPE;
	cmsg->cmsg_len = CMSG_LEN(sizeof(uint8_t));
	*CMSG_DATA(cmsg) = KTLS_RECORD_ALERT;
	if (sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

/* ---- Probe ---- */

/* A connected loopback TCP pair; 0 or -errno. */
static int ktls_probe_pair(int *a, int *b)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int lfd, ret;

	*a = *b = -1;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &len) < 0)
		goto err_errno;
	*a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*a < 0 || connect(*a, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		goto err_errno;
	*b = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (*b < 0)
		goto err_errno;
	close(lfd);
	return 0;

err_errno:
	ret = -errno;
	if (*a >= 0)
		close(*a);
	*a = -1;
	close(lfd);
	return ret;
}

/*
 * One (version, cipher): TX keys on one end, the same keys as RX on the
 * other, and a record across. 0, or -errno with *step naming what failed.
 */
static int ktls_probe_one(bool tls13, enum ktls_cipher c, const char **step)
{
	static const uint8_t secret[KTLS_SECRET_MAX] = { 0x5a };
	union ktls_crypto_info info;
	char buf[sizeof(KTLS_PROBE_TEXT)];
	enum ktls_step st;
	struct pollfd pfd;
	int a, b, ret;

	*step = "loopback socket";
	ret = ktls_probe_pair(&a, &b);
	if (ret < 0)
		return ret;
	*step = "key derivation";
	if (tls13)
		ret = ktls_tls13_info(c, secret, 32, 0, &info);
	else
		ret = ktls_tls12_info(c, secret, 48, secret, secret, true, 0, &info);
	if (ret < 0)
		goto out;
	/* Both ends: a's TX and b's RX use the same direction's keys. */
	ret = ktls_install(a, &info, &info, &st);
	if (ret == 0)
		ret = ktls_install(b, &info, &info, &st);
	if (ret < 0) {
		*step = ktls_step_name(st);
		goto out;
	}
	*step = "probe record";
	if (send(a, KTLS_PROBE_TEXT, sizeof(buf), MSG_NOSIGNAL) != (ssize_t)sizeof(buf)) {
		ret = -EIO;
		goto out;
	}
	pfd = (struct pollfd){ .fd = b, .events = POLLIN };
	if (poll(&pfd, 1, KTLS_PROBE_TIMEOUT_MS) != 1 ||
	    recv(b, buf, sizeof(buf), MSG_DONTWAIT) != (ssize_t)sizeof(buf) ||
	    memcmp(buf, KTLS_PROBE_TEXT, sizeof(buf)) != 0)
		ret = -EIO;
out:
	explicit_bzero(&info, sizeof(info));
	close(a);
	close(b);
	return ret;
}

unsigned ktls_probe(char *why, size_t why_size)
{
	unsigned mask = 0;
	bool first_fail = true;

	if (why && why_size)
		why[0] = '\0';
	for (int v = 0; v < 2; v++) {
		for (int c = 1; c <= KTLS_CIPHER_COUNT; c++) {
			const char *step = "";
			int ret = ktls_probe_one(v == 1, (enum ktls_cipher)c, &step);

			if (ret == 0) {
				mask |= KTLS_BIT(v == 1, c);
				continue;
			}
			if (first_fail && why && why_size) {
				const char *name = strerrorname_np(-ret);

				if (ret == -ENOENT && strcmp(step, "TCP_ULP") == 0)
					snprintf(why, why_size, "the kernel has no tls ULP (%s)", name);
				else
					snprintf(why, why_size, "TLS %s %s: %s failed (%s)",
						 v ? "1.3" : "1.2", ktls_cipher_name((enum ktls_cipher)c),
						 step, name ? name : "?");
				first_fail = false;
			}
			/* Without the ULP nothing else can work: stop early. */
			if (strcmp(step, "TCP_ULP") == 0 || strcmp(step, "loopback socket") == 0)
				return 0;
		}
	}
	return mask;
}
