// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The data plane: the misc device /dev/stanza_offload.
 *
 * Each open file is an owner (struct so_owner) in the namespace of the
 * process that opened it. An owner registers its connection sockets by
 * fd; the module keeps a reference on each socket's file (as io_uring's
 * registered files do), so a registered socket stays open until its owner
 * unregisters it or closes the device. The daemon therefore unregisters a
 * connection before it closes its fd.
 *
 * A fan-out request names registered sockets by id and carries one stanza
 * as prefix + per-target splice + suffix (the daemon splices each
 * recipient's 'to' attribute, daemon/fanout.h). The module writes the
 * three pieces to every socket with one kernel_sendmsg() each, without
 * blocking, and reports per socket how many bytes went out; the daemon
 * queues whatever is left after them. kernel_sendmsg() goes through the
 * socket's protocol, so a kTLS socket encrypts as for any other send.
 *
 * Nothing here runs in atomic context: every path is a system call of
 * the owner (or the genetlink control plane in so_genl.c).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/nsproxy.h>
#include <linux/overflow.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/uaccess.h>
#include <net/inet_connection_sock.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "so_internal.h"

/* The payload of one fan-out request, copied into the kernel once. */
struct so_payload {
	const char *prefix;
	const char *suffix;
	const char *splices;
	u32 prefix_len;
	u32 suffix_len;
	u32 splices_len;
};

/**
 * so_sock_is_ktls - whether a TCP socket carries the kernel's TLS
 * @sock: a registered (TCP) socket
 *
 * The ULP pointer is set once, by the owner's setsockopt(TCP_ULP); a
 * racy read only decides a flag in a report.
 *
 * Return: true if the "tls" upper layer is attached.
 */
bool so_sock_is_ktls(struct socket *sock)
{
	const struct tcp_ulp_ops *ulp = READ_ONCE(inet_csk(sock->sk)->icsk_ulp_ops);

	return ulp && !strcmp(ulp->name, "tls");
}

/* ---- Owners ---- */

/* Drops every registration of o. Caller holds o->lock (or is the last user). */
static void so_owner_drop_socks(struct so_owner *o)
{
	struct so_sock *s;
	unsigned long id;

	xa_for_each(&o->socks, id, s) {
		xa_erase(&o->socks, id);
		sockfd_put(s->sock);
		kfree(s);
	}
	atomic_sub(o->nsocks, &o->sn->registered);
	o->nsocks = 0;
}

/**
 * so_owner_revoke - ends an owner's use of the module (SET_CONFIG enabled=0)
 * @o: an owner of a namespace whose so_net.lock the caller holds
 *
 * Waits for a request in progress, drops the registrations (their sockets
 * close once their owner closed them too) and fails every later request
 * with ESHUTDOWN, so the owner closes the file and the module can go.
 */
void so_owner_revoke(struct so_owner *o)
{
	mutex_lock(&o->lock);
	so_owner_drop_socks(o);
	o->revoked = true;
	mutex_unlock(&o->lock);
}

static int so_dev_open(struct inode *inode, struct file *file)
{
	struct net *net = current->nsproxy->net_ns;
	struct so_net *sn = so_net(net);
	struct so_owner *o;

	o = kzalloc(sizeof(*o), GFP_KERNEL_ACCOUNT);
	if (!o)
		return -ENOMEM;
	mutex_init(&o->lock);
	xa_init_flags(&o->socks, XA_FLAGS_ALLOC1 | XA_FLAGS_ACCOUNT);
	o->sn = sn;
	o->pid = task_tgid_vnr(current);

	mutex_lock(&sn->lock);
	if (!sn->cfg.enabled) {
		mutex_unlock(&sn->lock);
		mutex_destroy(&o->lock);
		kfree(o);
		return -ESHUTDOWN;
	}
	o->net = get_net(net);
	list_add_tail(&o->node, &sn->owners);
	sn->nowners++;
	sn->gen++;
	mutex_unlock(&sn->lock);

	/* misc_open() left the miscdevice here; the owner replaces it. */
	file->private_data = o;
	return stream_open(inode, file);
}

static int so_dev_release(struct inode *inode, struct file *file)
{
	struct so_owner *o = file->private_data;
	struct so_net *sn = o->sn;

	/* Unlinked first: neither the dump nor a revocation can reach it after. */
	mutex_lock(&sn->lock);
	list_del(&o->node);
	sn->nowners--;
	sn->gen++;
	mutex_unlock(&sn->lock);

	so_owner_drop_socks(o);
	xa_destroy(&o->socks);
	mutex_destroy(&o->lock);
	put_net(o->net);
	kfree(o);
	return 0;
}

/* ---- INFO ---- */

static long so_ioctl_info(struct so_owner *o, void __user *arg)
{
	const struct so_config *cfg = &o->sn->cfg;
	struct stanza_offload_info info = {
		.version = STANZA_OFFLOAD_VERSION,
		.enabled = READ_ONCE(cfg->enabled) && !READ_ONCE(o->revoked),
		.max_sockets_per_request = READ_ONCE(cfg->max_sockets_per_request),
		.max_payload = READ_ONCE(cfg->max_payload),
		.max_registered = READ_ONCE(cfg->max_registered),
		.registered = READ_ONCE(o->nsocks),
	};

	return copy_to_user(arg, &info, sizeof(info)) ? -EFAULT : 0;
}

/* ---- REGISTER / UNREGISTER ---- */

/*
 * Registers r->fd for o (o->lock held): a connected-or-not TCP socket of
 * o's namespace, plain or with kTLS. Fills r->id and r->flags. 0 or
 * -errno (see struct stanza_offload_register).
 */
static int so_register_one(struct so_owner *o, struct stanza_offload_reg *r, u32 max_registered)
{
	struct socket *sock;
	struct so_sock *s;
	struct sock *sk;
	int err;

	r->id = 0;
	r->flags = 0;
	sock = sockfd_lookup(r->fd, &err);
	if (!sock)
		return err;
	sk = sock->sk;
	err = -EPROTONOSUPPORT;
	if (!sk || sk->sk_type != SOCK_STREAM || sk->sk_protocol != IPPROTO_TCP ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6))
		goto err_put_sock;
	err = -EXDEV;
	if (!net_eq(sock_net(sk), o->net))
		goto err_put_sock;
	/* Any other upper layer (e.g. an MPTCP subflow) would see our bytes raw. */
	if (so_sock_is_ktls(sock)) {
		r->flags |= STANZA_OFFLOAD_SOCK_KTLS;
	} else if (inet_csk_has_ulp(sk)) {
		err = -EOPNOTSUPP;
		goto err_put_sock;
	}
	err = -ENOSPC;
	if (o->nsocks >= max_registered)
		goto err_put_sock;
	err = -ENOMEM;
	s = kzalloc(sizeof(*s), GFP_KERNEL_ACCOUNT);
	if (!s)
		goto err_put_sock;
	s->sock = sock;
	err = xa_alloc_cyclic(&o->socks, &s->id, s, XA_LIMIT(1, U32_MAX), &o->next_id,
			      GFP_KERNEL_ACCOUNT);
	if (err < 0)
		goto err_free_sock;
	o->nsocks++;
	atomic_inc(&o->sn->registered);
	atomic64_inc(&o->sn->stats.registrations);
	r->id = s->id;
	return 0;

err_free_sock:
	kfree(s);
err_put_sock:
	sockfd_put(sock);
	return err;
}

static long so_ioctl_register(struct so_owner *o, void __user *arg)
{
	struct stanza_offload_register req;
	struct stanza_offload_reg __user *ureg;
	struct stanza_offload_reg *regs;
	size_t size;
	u32 i, max;
	long err;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.version != STANZA_OFFLOAD_VERSION || req.reserved)
		return -EINVAL;
	if (req.count > READ_ONCE(o->sn->cfg.max_sockets_per_request))
		return -E2BIG;
	req.registered = 0;
	if (!req.count)
		return copy_to_user(arg, &req, sizeof(req)) ? -EFAULT : 0;

	size = array_size(req.count, sizeof(*regs));
	ureg = u64_to_user_ptr(req.socks);
	regs = kvmalloc(size, GFP_KERNEL_ACCOUNT);
	if (!regs)
		return -ENOMEM;
	err = -EFAULT;
	if (copy_from_user(regs, ureg, size))
		goto out_free;

	mutex_lock(&o->lock);
	if (o->revoked) {
		mutex_unlock(&o->lock);
		err = -ESHUTDOWN;
		goto out_free;
	}
	max = READ_ONCE(o->sn->cfg.max_registered);
	for (i = 0; i < req.count; i++) {
		regs[i].error = so_register_one(o, &regs[i], max);
		if (!regs[i].error)
			req.registered++;
	}
	mutex_unlock(&o->lock);

	/*
	 * If the results cannot be written back the registrations stay (the
	 * caller cannot name them, but closing the file drops them).
	 */
	err = -EFAULT;
	if (copy_to_user(ureg, regs, size) || copy_to_user(arg, &req, sizeof(req)))
		goto out_free;
	err = 0;
out_free:
	kvfree(regs);
	return err;
}

static long so_ioctl_unregister(struct so_owner *o, void __user *arg)
{
	struct stanza_offload_unregister req;
	struct so_sock *s;
	size_t size;
	u32 *ids, i;
	long n = 0;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.version != STANZA_OFFLOAD_VERSION)
		return -EINVAL;
	if (req.count > READ_ONCE(o->sn->cfg.max_sockets_per_request))
		return -E2BIG;
	if (!req.count)
		return 0;
	size = array_size(req.count, sizeof(*ids));
	ids = kvmalloc(size, GFP_KERNEL);
	if (!ids)
		return -ENOMEM;
	if (copy_from_user(ids, u64_to_user_ptr(req.ids), size)) {
		kvfree(ids);
		return -EFAULT;
	}
	/* Allowed on a revoked file: there is simply nothing left to drop. */
	mutex_lock(&o->lock);
	for (i = 0; i < req.count; i++) {
		s = ids[i] ? xa_erase(&o->socks, ids[i]) : NULL;
		if (!s)
			continue;
		sockfd_put(s->sock);
		kfree(s);
		o->nsocks--;
		atomic_dec(&o->sn->registered);
		n++;
	}
	mutex_unlock(&o->lock);
	kvfree(ids);
	return n;
}

/* ---- FANOUT ---- */

/*
 * Writes one target's copy (o->lock held). Returns the bytes the socket
 * took (0 when its send buffer is full) or -errno.
 */
static int so_fanout_one(struct so_owner *o, const struct so_payload *p,
			 const struct stanza_offload_target *t)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec vec[3];
	struct so_sock *s;
	size_t total = 0;
	int n = 0, ret;

	s = xa_load(&o->socks, t->id);
	if (!s)
		return -EBADF;
	if (t->splice_len > STANZA_OFFLOAD_SPLICE_MAX ||
	    (u64)t->splice_off + t->splice_len > p->splices_len)
		return -EINVAL;
	if (p->prefix_len)
		vec[n++] = (struct kvec){ (void *)p->prefix, p->prefix_len };
	if (t->splice_len)
		vec[n++] = (struct kvec){ (void *)(p->splices + t->splice_off), t->splice_len };
	if (p->suffix_len)
		vec[n++] = (struct kvec){ (void *)p->suffix, p->suffix_len };
	for (int i = 0; i < n; i++)
		total += vec[i].iov_len;
	if (!total)
		return 0;

	ret = kernel_sendmsg(s->sock, &msg, vec, n, total);
	s->sends++;
	if (ret == -EAGAIN)
		ret = 0;	/* nothing taken: the daemon queues it all */
	if (ret > 0)
		s->bytes += ret;
	if (ret >= 0 && (size_t)ret < total)
		s->partial++;
	return ret;
}

/* Copies len bytes from user address uaddr to dst (len may be 0). */
static int so_copy_in(char *dst, u64 uaddr, u32 len)
{
	if (!len)
		return 0;
	return copy_from_user(dst, u64_to_user_ptr(uaddr), len) ? -EFAULT : 0;
}

static long so_ioctl_fanout(struct so_owner *o, void __user *arg)
{
	const struct so_config *cfg = &o->sn->cfg;
	struct so_stats *st = &o->sn->stats;
	struct stanza_offload_target *targets;
	struct stanza_offload_fanout req;
	u64 bytes = 0, complete = 0, partial = 0, blocked = 0, errors = 0;
	u32 i, tried = 0;
	struct so_payload p;
	size_t size, total;
	char *buf;
	long err;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.version != STANZA_OFFLOAD_VERSION || req.flags || req.reserved)
		return -EINVAL;
	if (!READ_ONCE(cfg->enabled) || READ_ONCE(o->revoked))
		return -ESHUTDOWN;
	if (req.count > READ_ONCE(cfg->max_sockets_per_request) ||
	    (u64)req.prefix_len + req.suffix_len > READ_ONCE(cfg->max_payload) ||
	    req.splices_len > STANZA_OFFLOAD_SPLICES_MAX) {
		atomic64_inc(&st->rejected);
		return -E2BIG;
	}
	req.complete = 0;
	if (!req.count)
		return copy_to_user(arg, &req, sizeof(req)) ? -EFAULT : 0;

	/* One buffer for the three byte ranges; bounded by the checks above. */
	total = (size_t)req.prefix_len + req.suffix_len + req.splices_len;
	buf = kvmalloc(total ? total : 1, GFP_KERNEL_ACCOUNT);
	if (!buf)
		return -ENOMEM;
	p.prefix = buf;
	p.suffix = buf + req.prefix_len;
	p.splices = buf + req.prefix_len + req.suffix_len;
	p.prefix_len = req.prefix_len;
	p.suffix_len = req.suffix_len;
	p.splices_len = req.splices_len;
	err = so_copy_in(buf, req.prefix, req.prefix_len);
	if (!err)
		err = so_copy_in(buf + req.prefix_len, req.suffix, req.suffix_len);
	if (!err)
		err = so_copy_in(buf + req.prefix_len + req.suffix_len, req.splices, req.splices_len);
	if (err)
		goto out_free_buf;

	size = array_size(req.count, sizeof(*targets));
	targets = kvmalloc(size, GFP_KERNEL_ACCOUNT);
	err = -ENOMEM;
	if (!targets)
		goto out_free_buf;
	err = -EFAULT;
	if (copy_from_user(targets, u64_to_user_ptr(req.targets), size))
		goto out_free_targets;

	mutex_lock(&o->lock);
	if (o->revoked) {
		mutex_unlock(&o->lock);
		err = -ESHUTDOWN;
		goto out_free_targets;
	}
	for (i = 0; i < req.count; i++) {
		struct stanza_offload_target *t = &targets[i];
		size_t want = (size_t)p.prefix_len + p.suffix_len + t->splice_len;
		int ret;

		/* A killed owner stops here; its later targets report EINTR. */
		if (fatal_signal_pending(current)) {
			for (; i < req.count; i++)
				targets[i].result = -EINTR;
			break;
		}
		ret = so_fanout_one(o, &p, t);
		t->result = ret;
		tried++;
		if (ret < 0) {
			errors++;
		} else {
			bytes += ret;
			if ((size_t)ret == want)
				complete++;
			else if (ret)
				partial++;
			else
				blocked++;
		}
		cond_resched();
	}
	mutex_unlock(&o->lock);

	atomic64_inc(&st->requests);
	atomic64_add(tried, &st->targets);
	atomic64_add(complete, &st->complete);
	atomic64_add(partial, &st->partial);
	atomic64_add(blocked, &st->blocked);
	atomic64_add(errors, &st->errors);
	atomic64_add(bytes, &st->bytes);

	req.complete = complete;
	err = -EFAULT;
	if (copy_to_user(u64_to_user_ptr(req.targets), targets, size) ||
	    copy_to_user(arg, &req, sizeof(req)))
		goto out_free_targets;
	err = 0;
out_free_targets:
	kvfree(targets);
out_free_buf:
	kvfree(buf);
	return err;
}

/* ---- The device ---- */

static long so_dev_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct so_owner *o = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case STANZA_OFFLOAD_IOC_INFO:
		return so_ioctl_info(o, uarg);
	case STANZA_OFFLOAD_IOC_REGISTER:
		return so_ioctl_register(o, uarg);
	case STANZA_OFFLOAD_IOC_UNREGISTER:
		return so_ioctl_unregister(o, uarg);
	case STANZA_OFFLOAD_IOC_FANOUT:
		return so_ioctl_fanout(o, uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations so_dev_fops = {
	.owner = THIS_MODULE,
	.open = so_dev_open,
	.release = so_dev_release,
	.unlocked_ioctl = so_dev_ioctl,
	/* Every struct is fixed-width with u64 addresses: no translation needed. */
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = no_llseek,
};

static struct miscdevice so_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = STANZA_OFFLOAD_DEVICE_NAME,
	.fops = &so_dev_fops,
	.mode = 0600,	/* the daemon runs as root or is given the node */
};

int so_dev_init(void)
{
	return misc_register(&so_miscdev);
}

void so_dev_exit(void)
{
	misc_deregister(&so_miscdev);
}
