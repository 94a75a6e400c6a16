// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The stanza offload module: one request fans a stanza out to many
 * registered TCP sockets (plain or kTLS) inside the kernel, so the daemon
 * makes one system call per fan-out instead of one send per recipient.
 *
 *   so_main.c	module init/exit, per-namespace state
 *   so_dev.c	the misc device /dev/stanza_offload: owners, registration,
 *		fan-out requests (ioctl)
 *   so_genl.c	the generic netlink family "stanza_offload": counters,
 *		configuration, the socket dump, events
 *
 * The ABI is include/stanzad/uapi/stanza_offload.h.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>

#include "so_internal.h"

unsigned int so_net_id __read_mostly;

static int __net_init so_net_init(struct net *net)
{
	struct so_net *sn = so_net(net);

	mutex_init(&sn->lock);
	INIT_LIST_HEAD(&sn->owners);
	sn->cfg.enabled = 1;
	sn->cfg.max_sockets_per_request = STANZA_OFFLOAD_DEFAULT_MAX_SOCKETS;
	sn->cfg.max_payload = STANZA_OFFLOAD_DEFAULT_MAX_PAYLOAD;
	sn->cfg.max_registered = STANZA_OFFLOAD_DEFAULT_MAX_REGISTERED;
	return 0;
}

/*
 * Every owner holds a reference on its namespace, so a namespace only
 * goes away with no owner left; the module itself cannot be unloaded
 * while a file is open. Nothing to free but the lock.
 */
static void __net_exit so_net_exit(struct net *net)
{
	struct so_net *sn = so_net(net);

	if (!list_empty(&sn->owners))
		pr_err("namespace exits with %u owners left\n", sn->nowners);
	mutex_destroy(&sn->lock);
}

static struct pernet_operations so_net_ops = {
	.init = so_net_init,
	.exit = so_net_exit,
	.id = &so_net_id,
	.size = sizeof(struct so_net),
};

/*
 * ORDER: per-namespace state first (both interfaces look it up), then the
 * control plane (genetlink), then the data plane (the device), which lets
 * user space in: by then everything it can reach exists. Teardown runs in
 * reverse; the device goes first, and the module cannot be unloading
 * while one of its files is open (the file holds a module reference).
 */
static int __init so_init(void)
{
	int err;

	err = register_pernet_subsys(&so_net_ops);
	if (err)
		return err;
	err = so_genl_init();
	if (err)
		goto err_unregister_pernet;
	err = so_dev_init();
	if (err)
		goto err_unregister_genl;
	pr_info("loaded (ABI version %u)\n", STANZA_OFFLOAD_VERSION);
	return 0;

err_unregister_genl:
	so_genl_exit();
err_unregister_pernet:
	unregister_pernet_subsys(&so_net_ops);
	return err;
}

static void __exit so_exit(void)
{
	so_dev_exit();
	so_genl_exit();
	unregister_pernet_subsys(&so_net_ops);
	pr_info("unloaded\n");
}

module_init(so_init);
module_exit(so_exit);

MODULE_LICENSE("Dual MIT/GPL");
MODULE_AUTHOR("stanzad");
MODULE_DESCRIPTION("stanzad stanza fan-out offload: one request writes a stanza to many sockets");
MODULE_VERSION("1");
