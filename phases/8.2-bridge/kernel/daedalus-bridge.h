/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: the kernel side of the bridge to daedalusd (phase 8.2).
 *
 * Later layers send requests with daedalus_bridge_call(); the wire format is
 * shared/proto/include/daedalus_v4l2_proto.h.
 */
#ifndef _DAEDALUS_BRIDGE_H
#define _DAEDALUS_BRIDGE_H

#include <linux/types.h>

struct daedalus_dev;
struct dentry;

/**
 * struct daedalus_reply - what the daemon answered
 * @buf: where the answer's payload is copied; set by the caller.
 * @max_len: size of @buf; an answer with a longer payload is rejected.
 * @len: bytes of payload received.
 * @status: the answer's status (0 or a positive errno from the daemon).
 * @validate: optional; checks an answer's status and payload before it is
 *	accepted. Returning false rejects the daemon's write with -EINVAL and
 *	leaves the request waiting. Called with the bridge lock held; must not
 *	sleep.
 */
struct daedalus_reply {
	void *buf;
	u32 max_len;
	u32 len;
	u32 status;
	bool (*validate)(const struct daedalus_reply *reply, u32 status,
			 const void *payload, u32 len);
};

int daedalus_bridge_call(struct daedalus_dev *dev, u16 type,
			 const void *payload, u32 len,
			 struct daedalus_reply *reply);
struct dentry *daedalus_debugfs_dir(struct daedalus_dev *dev);

/* daedalus-ping.c */
int daedalus_ping_publish(struct daedalus_dev *dev);

#endif /* _DAEDALUS_BRIDGE_H */
