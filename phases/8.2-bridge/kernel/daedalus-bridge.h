/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: the kernel side of the bridge to daedalusd (phase 8.2).
 *
 * Later layers send requests with daedalus_bridge_call() (or, on behalf of an
 * application's file, daedalus_bridge_call_as(); with buffers the daemon may
 * map, daedalus_bridge_call_attached()); the wire format is
 * shared/proto/include/daedalus_v4l2_proto.h. The bridge's state is this
 * layer's own (its slot of the device); later layers that need the bridge
 * itself reach it through daedalus_dev_bridge().
 *
 * ioctls of /dev/daedalus-v4l2: the bridge serves none itself. A later
 * layer's init installs one handler with daedalus_bridge_set_ioctl() (phase
 * 8.6: DAEDALUS_IOC_GET_DMABUF, which hands the daemon the dma-buf of a
 * buffer through daedalus_bridge_get_dmabuf(), and DAEDALUS_IOC_IN_FLIGHT,
 * daedalus_bridge_in_flight()); without one every ioctl is
 * -ENOTTY. The handler runs in the daemon's process, without the bridge lock.
 */
#ifndef _DAEDALUS_BRIDGE_H
#define _DAEDALUS_BRIDGE_H

#include <linux/types.h>
#include <linux/uidgid.h>

struct daedalus_bridge;
struct daedalus_dev;
struct daedalus_layer;
struct dentry;
struct dma_buf;

/* This layer, for the layer table and for its slot of the device. */
extern const struct daedalus_layer daedalus_bridge_layer;

/**
 * struct daedalus_reply - what the daemon answered
 * @buf: where the answer's payload is copied; set by the caller.
 * @max_len: size of @buf; an answer with a longer payload is rejected.
 * @len: bytes of payload received.
 * @status: the answer's status (0 or a positive errno from the daemon).
 * @dmabufs: how many buffers of the request's job the daemon was handed
 *	(daedalus_bridge_get_dmabuf()) while it was in flight; set to zero
 *	when the request is sent and counted by the bridge. @validate may
 *	require one: an answer saying that the daemon wrote into a buffer it
 *	never took is false. Protected by the bridge lock.
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
	u32 dmabufs;
	bool (*validate)(const struct daedalus_reply *reply, u32 status,
			 const void *payload, u32 len);
};

/**
 * struct daedalus_caller - who a request is sent for
 * @uid: the application's user; requests of different users are read by the
 *	daemon in turn (round robin), so one user cannot starve another.
 * @cancelled: daedalus_bridge_cancel() was called and no
 *	daedalus_bridge_resume() since: requests fail with -ECANCELED at once.
 *	Protected by the bridge lock.
 *
 * Initialize with daedalus_caller_init(); it must outlive every request sent
 * for it.
 */
struct daedalus_caller {
	kuid_t uid;
	bool cancelled;
};

/**
 * struct daedalus_attach - the buffers of the job a request is sent for
 * @get: buffer @index of the job as a dma-buf: a new reference (for the
 *	daemon's file descriptor), with the bytes the daemon may map in
 *	*@size; or ERR_PTR(-EINVAL) for an index the job does not have, or
 *	another error. Called by daedalus_bridge_get_dmabuf() with the bridge
 *	lock held, and only while the request is in flight (read by the daemon,
 *	not yet answered, failed or given up): its sender is then still blocked
 *	in daedalus_bridge_call_attached(), so the job and its buffers stay
 *	valid. It may sleep, but must not take a lock that is held around a
 *	bridge call or daedalus_bridge_cancel().
 *
 * The sender embeds it in its own description of the job (container_of()):
 * the bridge knows nothing of what the buffers are.
 */
struct daedalus_attach {
	struct dma_buf *(*get)(const struct daedalus_attach *attach, u32 index,
			       u32 *size);
};

/*
 * An ioctl of /dev/daedalus-v4l2 (see daedalus_bridge_set_ioctl()): @cmd and
 * @arg as the daemon passed them (compat callers' @arg already converted).
 */
typedef long (*daedalus_bridge_ioctl_fn)(struct daedalus_dev *dev,
					 unsigned int cmd, unsigned long arg);

struct daedalus_bridge *daedalus_dev_bridge(struct daedalus_dev *dev);
void daedalus_caller_init(struct daedalus_caller *caller, kuid_t uid);
int daedalus_bridge_call_as(struct daedalus_dev *dev,
			    struct daedalus_caller *caller, u16 type,
			    const void *payload, u32 len,
			    struct daedalus_reply *reply);
int daedalus_bridge_call_attached(struct daedalus_dev *dev,
				  struct daedalus_caller *caller, u16 type,
				  const void *payload, u32 len,
				  const struct daedalus_attach *attach,
				  struct daedalus_reply *reply);
int daedalus_bridge_call(struct daedalus_dev *dev, u16 type,
			 const void *payload, u32 len,
			 struct daedalus_reply *reply);
int daedalus_bridge_post(struct daedalus_dev *dev, u16 type,
			 const void *payload, u32 len);
void daedalus_bridge_cancel(struct daedalus_dev *dev,
			    struct daedalus_caller *caller);
void daedalus_bridge_resume(struct daedalus_dev *dev,
			    struct daedalus_caller *caller);
struct dentry *daedalus_debugfs_dir(struct daedalus_dev *dev);
void daedalus_bridge_set_ioctl(struct daedalus_dev *dev,
			       daedalus_bridge_ioctl_fn ioctl);
struct dma_buf *daedalus_bridge_get_dmabuf(struct daedalus_dev *dev,
					   u64 cookie, u32 index, u32 *size);
bool daedalus_bridge_in_flight(struct daedalus_dev *dev, u64 cookie);

/* daedalus-ping.c */
int daedalus_ping_publish(struct daedalus_dev *dev);

#endif /* _DAEDALUS_BRIDGE_H */
