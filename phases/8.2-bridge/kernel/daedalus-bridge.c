// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.2 layer, the bridge to daedalusd.
 *
 * The misc device /dev/daedalus-v4l2 carries requests to the daemon and its
 * answers back (wire format: daedalus_v4l2_proto.h). Reading order:
 * daedalus_bridge_call() (how a request travels), daedalus_bridge_read()
 * and daedalus_bridge_write() (the daemon's side), daedalus_bridge_release()
 * (what happens when the daemon goes away).
 *
 * A request is allocated with a copy of its payload. It sits on one of
 * bridge->lanes (one FIFO per hash of the application's user, read in turn,
 * so one user's many files cannot starve another user) until the daemon
 * reads it, then on bridge->inflight until the daemon answers, the watchdog
 * fires, the sender cancels it or the daemon closes the device; whichever
 * comes first takes it off its list under bridge->lock, so exactly one of
 * them finishes it. The daemon is not trusted: every message it writes is
 * validated in full before it can touch a request, and no copy to or from
 * its memory happens under the bridge lock.
 *
 * A request sent with daedalus_bridge_call_attached() names the buffers of
 * its job (struct daedalus_attach); while it is in flight the daemon may ask
 * for them as dma-bufs (daedalus_bridge_get_dmabuf(), reached through the
 * ioctl handler a later layer installs), and never before or after.
 */
#include <linux/completion.h>
#include <linux/cred.h>
#include <linux/debugfs.h>
#include <linux/device.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/poll.h>
#include <linux/refcount.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "daedalus.h"
#include "daedalus-bridge.h"
#include "daedalus_v4l2_proto.h"

static unsigned int daemon_timeout_ms = 5000;
module_param(daemon_timeout_ms, uint, 0644);
MODULE_PARM_DESC(daemon_timeout_ms,
		 "the watchdog: how long daedalusd may take to answer a request it has read, and to read anything while requests wait (ms)");

/* Requests of different users are read in turn from this many lanes. */
#define DAEDALUS_LANES		16
/* Most requests sent without a waiter (posted) at a time. */
#define DAEDALUS_MAX_POSTED	256

enum daedalus_req_state {
	DAEDALUS_REQ_PENDING,	/* on a lane, waiting for the daemon to read it */
	DAEDALUS_REQ_INFLIGHT,	/* read, waiting for the answer */
	DAEDALUS_REQ_DONE,	/* answered, failed or given up; on no list */
};

/*
 * A request owns a copy of its payload, so the daemon's read() copies it to
 * user space without the bridge lock (a faulting or stalled copy delays only
 * that read). References: one for the sender (a waiting caller, or the bridge
 * itself for a posted request, dropped when it is finished) and one for each
 * read() copying it. @attach (NULL for most requests, always for a posted
 * one) lives in the sender's frame: it is used only under the bridge lock
 * while the request is in flight, when the sender is still waiting.
 */
struct daedalus_request {
	struct list_head node;
	refcount_t ref;
	struct daedalus_msg_hdr hdr;
	struct daedalus_caller *caller;
	unsigned int lane;
	enum daedalus_req_state state;
	bool posted;
	unsigned long read_at;
	struct daedalus_reply *reply;
	struct daedalus_reply own_reply;
	const struct daedalus_attach *attach;
	struct completion done;
	int result;
	void (*finish)(struct daedalus_bridge *b, struct daedalus_request *req);
	u8 payload[];
};

/**
 * struct daedalus_bridge - state of /dev/daedalus-v4l2
 * @misc: the character device.
 * @dev: the device this bridge serves.
 * @lock: protects every member below it and the state, lists and replies of
 *	every request; never held while copying to or from user space.
 * @lanes: requests queued for the daemon to read, one FIFO per user hash.
 * @next_lane: the lane read() looks at first.
 * @nr_pending: requests on @lanes.
 * @inflight: requests read by the daemon and waiting for an answer.
 * @nr_posted: posted requests not finished yet.
 * @connected: a daemon has the device open.
 * @ready: the daemon answered HELLO with our protocol version.
 * @last_read: jiffies of the daemon's last read (or of the handshake).
 * @next_cookie: the last cookie handed out; cookies are never reused.
 * @hello_in: HELLO payload received from the daemon.
 * @hello_reply: where @hello_in is described.
 * @readq: the daemon waits here for requests.
 * @debugfs: /sys/kernel/debug/daedalus-v4l2.
 * @ioctl: the ioctl handler a later layer installed, or NULL (every ioctl is
 *	then -ENOTTY). Set by that layer's init, before the device is
 *	published, and read-only afterwards: no lock.
 */
struct daedalus_bridge {
	struct miscdevice misc;
	struct daedalus_dev *dev;
	struct mutex lock; /* protects the lists, state, cookies and requests */
	struct list_head lanes[DAEDALUS_LANES];
	unsigned int next_lane;
	unsigned int nr_pending;
	struct list_head inflight;
	unsigned int nr_posted;
	bool connected;
	bool ready;
	unsigned long last_read;
	u64 next_cookie;
	struct daedalus_hello hello_in;
	struct daedalus_reply hello_reply;
	wait_queue_head_t readq;
	struct dentry *debugfs;
	daedalus_bridge_ioctl_fn ioctl;
};

/*
 * The bridge is this layer's state, kept in its slot of the device; NULL
 * before its init and after its exit.
 */
struct daedalus_bridge *daedalus_dev_bridge(struct daedalus_dev *dev)
{
	return daedalus_layer_priv(dev, &daedalus_bridge_layer);
}

static struct daedalus_bridge *daedalus_file_to_bridge(struct file *file)
{
	return container_of(file->private_data, struct daedalus_bridge, misc);
}

void daedalus_caller_init(struct daedalus_caller *caller, kuid_t uid)
{
	caller->uid = uid;
	caller->cancelled = false;
}

static struct daedalus_request *daedalus_req_alloc(u16 type, const void *payload,
						   u32 len, kuid_t uid)
{
	struct daedalus_request *req;

	req = kvmalloc(struct_size(req, payload, len), GFP_KERNEL_ACCOUNT);
	if (!req)
		return NULL;
	memset(req, 0, sizeof(*req));
	INIT_LIST_HEAD(&req->node);
	refcount_set(&req->ref, 1);
	req->hdr.magic = DAEDALUS_PROTO_MAGIC;
	req->hdr.version = DAEDALUS_PROTO_VERSION;
	req->hdr.type = type;
	req->hdr.payload_len = len;
	req->lane = from_kuid_munged(&init_user_ns, uid) % DAEDALUS_LANES;
	req->reply = &req->own_reply;
	init_completion(&req->done);
	if (len)
		memcpy(req->payload, payload, len);
	return req;
}

static void daedalus_req_put(struct daedalus_request *req)
{
	if (refcount_dec_and_test(&req->ref))
		kvfree(req);
}

/* Called with bridge->lock held, once per request: takes it off its list. */
static void daedalus_req_finish(struct daedalus_bridge *b,
				struct daedalus_request *req, int result)
{
	if (req->state == DAEDALUS_REQ_PENDING)
		b->nr_pending--;
	list_del_init(&req->node);
	req->state = DAEDALUS_REQ_DONE;
	req->result = result;
	if (req->finish)
		req->finish(b, req);
	if (req->posted) {
		b->nr_posted--;
		daedalus_req_put(req);
	} else {
		complete(&req->done);
	}
}

/* Called with bridge->lock held. */
static void daedalus_req_queue(struct daedalus_bridge *b,
			       struct daedalus_request *req)
{
	req->hdr.cookie = ++b->next_cookie;
	req->state = DAEDALUS_REQ_PENDING;
	list_add_tail(&req->node, &b->lanes[req->lane]);
	b->nr_pending++;
	wake_up_interruptible(&b->readq);
}

/*
 * Finishes the queued and in-flight requests of @caller (every request when
 * @caller is NULL) with @result; called with bridge->lock held.
 */
static void daedalus_fail_requests(struct daedalus_bridge *b,
				   struct daedalus_caller *caller, int result)
{
	struct daedalus_request *req, *tmp;
	unsigned int i;

	for (i = 0; i < DAEDALUS_LANES; i++)
		list_for_each_entry_safe(req, tmp, &b->lanes[i], node)
			if (!caller || req->caller == caller)
				daedalus_req_finish(b, req, result);
	list_for_each_entry_safe(req, tmp, &b->inflight, node)
		if (!caller || req->caller == caller)
			daedalus_req_finish(b, req, result);
}

/*
 * Waits for @req's answer. The watchdog: a request the daemon has read must
 * be answered within daemon_timeout_ms; a request still queued waits as long
 * as the daemon keeps reading (it is busy with other users' requests, which
 * are read in turn), and fails once the daemon has read nothing for
 * daemon_timeout_ms.
 */
static int daedalus_bridge_wait(struct daedalus_bridge *b,
				struct daedalus_request *req)
{
	unsigned long timeout = msecs_to_jiffies(daemon_timeout_ms);
	unsigned long wait = timeout, since;
	long left;
	int ret;

	for (;;) {
		left = wait_for_completion_killable_timeout(&req->done, wait);
		mutex_lock(&b->lock);
		if (req->state == DAEDALUS_REQ_DONE) {
			ret = req->result;
			break;
		}
		if (left < 0) {
			ret = -EINTR;
		} else {
			since = req->state == DAEDALUS_REQ_INFLIGHT ?
				req->read_at : b->last_read;
			if (time_before(jiffies, since + timeout)) {
				wait = since + timeout - jiffies;
				mutex_unlock(&b->lock);
				continue;
			}
			ret = -ETIMEDOUT;
			dev_warn_ratelimited(&b->dev->pdev->dev,
					     "daemon did not answer request %llu in %u ms\n",
					     req->hdr.cookie, daemon_timeout_ms);
		}
		/* We give up: neither the daemon nor release finished it. */
		if (req->state == DAEDALUS_REQ_PENDING)
			b->nr_pending--;
		list_del_init(&req->node);
		req->state = DAEDALUS_REQ_DONE;
		break;
	}
	mutex_unlock(&b->lock);
	return ret;
}

/**
 * daedalus_bridge_call_attached() - send a request with the buffers of its job
 * @dev: the device.
 * @caller: who the request is for (fairness lane, cancellation); may be NULL.
 * @type: enum daedalus_msg_type.
 * @payload: request payload (copied; the caller may reuse it at once).
 * @len: bytes of @payload, at most DAEDALUS_MAX_PAYLOAD.
 * @attach: the job's buffers, which the daemon may ask for while the request
 *	is in flight (daedalus_bridge_get_dmabuf()); NULL for none. It must
 *	stay valid until this function returns.
 * @reply: where the answer goes (@reply->buf and @reply->max_len set).
 *
 * Context: process context; sleeps until the daemon answers, the watchdog
 * (see daedalus_bridge_wait()) fires or daedalus_bridge_cancel() is called
 * for @caller. A fatal signal ends the wait early.
 * Return: 0 when the daemon answered (its own status is in @reply->status),
 * -ENOTCONN without a daemon or when it goes away, -ETIMEDOUT when it does not
 * answer in time, -ECANCELED when @caller was cancelled, -EINTR on a fatal
 * signal, -ENOMEM, -EINVAL for a bad request.
 */
int daedalus_bridge_call_attached(struct daedalus_dev *dev,
				  struct daedalus_caller *caller, u16 type,
				  const void *payload, u32 len,
				  const struct daedalus_attach *attach,
				  struct daedalus_reply *reply)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);
	struct daedalus_request *req;
	int ret = 0;

	if (!b || len > DAEDALUS_MAX_PAYLOAD || type & DAEDALUS_MSG_RESPONSE)
		return -EINVAL;
	req = daedalus_req_alloc(type, payload, len,
				 caller ? caller->uid : current_fsuid());
	if (!req)
		return -ENOMEM;
	req->caller = caller;
	req->reply = reply;
	req->reply->dmabufs = 0;
	req->attach = attach;

	mutex_lock(&b->lock);
	if (!b->ready)
		ret = -ENOTCONN;
	else if (caller && caller->cancelled)
		ret = -ECANCELED;
	else
		daedalus_req_queue(b, req);
	mutex_unlock(&b->lock);
	if (!ret)
		ret = daedalus_bridge_wait(b, req);
	daedalus_req_put(req);
	return ret;
}

/**
 * daedalus_bridge_call_as() - send a request to daedalusd and wait for the answer
 * @dev: the device.
 * @caller: who the request is for (fairness lane, cancellation); may be NULL.
 * @type: enum daedalus_msg_type.
 * @payload: request payload (copied; the caller may reuse it at once).
 * @len: bytes of @payload, at most DAEDALUS_MAX_PAYLOAD.
 * @reply: where the answer goes (@reply->buf and @reply->max_len set).
 *
 * daedalus_bridge_call_attached() for a request without buffers.
 * Context: process context; sleeps.
 * Return: as daedalus_bridge_call_attached().
 */
int daedalus_bridge_call_as(struct daedalus_dev *dev,
			    struct daedalus_caller *caller, u16 type,
			    const void *payload, u32 len,
			    struct daedalus_reply *reply)
{
	return daedalus_bridge_call_attached(dev, caller, type, payload, len,
					     NULL, reply);
}

int daedalus_bridge_call(struct daedalus_dev *dev, u16 type,
			 const void *payload, u32 len,
			 struct daedalus_reply *reply)
{
	return daedalus_bridge_call_as(dev, NULL, type, payload, len, reply);
}

/* Called with bridge->lock held: posted requests the daemon read and left. */
static void daedalus_reap_posted(struct daedalus_bridge *b)
{
	unsigned long timeout = msecs_to_jiffies(daemon_timeout_ms);
	struct daedalus_request *req, *tmp;

	list_for_each_entry_safe(req, tmp, &b->inflight, node)
		if (req->posted && time_after_eq(jiffies, req->read_at + timeout))
			daedalus_req_finish(b, req, -ETIMEDOUT);
}

/**
 * daedalus_bridge_post() - send a request to daedalusd without waiting
 * @dev: the device.
 * @type: enum daedalus_msg_type; its answer must carry no payload.
 * @payload: request payload (copied).
 * @len: bytes of @payload.
 *
 * For notices such as CLOSE_STREAM that nobody waits for: a closing file
 * must not wait for the daemon. At most DAEDALUS_MAX_POSTED are outstanding.
 * Return: 0 when queued, -ENOTCONN without a daemon, -EBUSY over the limit,
 * -ENOMEM, -EINVAL.
 */
int daedalus_bridge_post(struct daedalus_dev *dev, u16 type,
			 const void *payload, u32 len)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);
	struct daedalus_request *req;
	int ret = 0;

	if (!b || len > DAEDALUS_MAX_PAYLOAD || type & DAEDALUS_MSG_RESPONSE)
		return -EINVAL;
	req = daedalus_req_alloc(type, payload, len, GLOBAL_ROOT_UID);
	if (!req)
		return -ENOMEM;
	req->posted = true;

	mutex_lock(&b->lock);
	daedalus_reap_posted(b);
	if (!b->ready) {
		ret = -ENOTCONN;
	} else if (b->nr_posted >= DAEDALUS_MAX_POSTED) {
		ret = -EBUSY;
	} else {
		b->nr_posted++;
		daedalus_req_queue(b, req);
	}
	mutex_unlock(&b->lock);
	if (ret)
		daedalus_req_put(req);
	return ret;
}

/**
 * daedalus_bridge_cancel() - fail @caller's requests now, and later ones too
 * @dev: the device.
 * @caller: whose requests.
 *
 * Requests queued or in flight for @caller finish with -ECANCELED, as do new
 * ones until daedalus_bridge_resume(). Used when a queue stops or a file
 * closes, so that neither waits for the daemon.
 */
void daedalus_bridge_cancel(struct daedalus_dev *dev,
			    struct daedalus_caller *caller)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);

	if (!b)
		return;
	mutex_lock(&b->lock);
	caller->cancelled = true;
	daedalus_fail_requests(b, caller, -ECANCELED);
	mutex_unlock(&b->lock);
}

void daedalus_bridge_resume(struct daedalus_dev *dev,
			    struct daedalus_caller *caller)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);

	if (!b)
		return;
	mutex_lock(&b->lock);
	caller->cancelled = false;
	mutex_unlock(&b->lock);
}

struct dentry *daedalus_debugfs_dir(struct daedalus_dev *dev)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);

	return b ? b->debugfs : NULL;
}

/**
 * daedalus_bridge_set_ioctl() - install the handler of the bridge's ioctls
 * @dev: the device.
 * @ioctl: the handler (one for the device; a later layer replacing it may
 *	call the one it replaces); NULL: every ioctl is -ENOTTY again.
 *
 * Context: a layer's init or exit only, when the bridge is not published:
 * the handler is then read without a lock.
 */
void daedalus_bridge_set_ioctl(struct daedalus_dev *dev,
			       daedalus_bridge_ioctl_fn ioctl)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);

	if (b)
		b->ioctl = ioctl;
}

/**
 * daedalus_bridge_get_dmabuf() - a buffer of the job of a request in flight
 * @dev: the device.
 * @cookie: the request, as the daemon read it.
 * @index: which buffer of its job (see struct daedalus_attach).
 * @size: set to the bytes the daemon may map.
 *
 * Only a request that the daemon has read and not answered yet, that its
 * sender has not given up (watchdog, cancellation, signal) and that was
 * sent with buffers (daedalus_bridge_call_attached()) has any: every other
 * cookie, including one of a request already finished, is -ENOENT.
 *
 * Why the job's buffers cannot go away meanwhile: a request is on
 * b->inflight exactly until whoever finishes it takes it off under
 * b->lock, and its sender can only return from daedalus_bridge_wait() after
 * taking b->lock and seeing it finished or taking it off itself. So while
 * this function holds b->lock and finds the request on b->inflight, its
 * sender is still blocked in daedalus_bridge_call_attached(), and everything
 * the sender holds for the job (the attachment in its frame, the buffers it
 * took from its queues) is still held. A sender that stops its queue or
 * closes its file cancels its requests first (daedalus_bridge_cancel(),
 * under b->lock), so buffers are freed only after their request left the
 * list. The dma-buf returned holds its own reference to the memory, which
 * therefore outlives the request if the daemon keeps it (see the trust model
 * in daedalus_v4l2_proto.h).
 *
 * Each buffer handed out is counted in the request's reply (@dmabufs of
 * struct daedalus_reply), which the sender's validation of the answer may
 * look at.
 *
 * Context: process context (the daemon's ioctl); takes the bridge lock and
 * calls @get() under it.
 * Return: a new reference to the dma-buf, or ERR_PTR(-ENOENT) (no such
 * request in flight, or one without buffers), or @get()'s error
 * (-EINVAL for an index the job lacks).
 */
struct dma_buf *daedalus_bridge_get_dmabuf(struct daedalus_dev *dev,
					   u64 cookie, u32 index, u32 *size)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);
	struct daedalus_request *req = NULL, *it;
	struct dma_buf *dbuf = ERR_PTR(-ENOENT);

	if (!b)
		return dbuf;
	mutex_lock(&b->lock);
	list_for_each_entry(it, &b->inflight, node) {
		if (it->hdr.cookie == cookie) {
			req = it;
			break;
		}
	}
	if (req && req->attach) {
		dbuf = req->attach->get(req->attach, index, size);
		if (!IS_ERR(dbuf))
			req->reply->dmabufs++;
	}
	mutex_unlock(&b->lock);
	return dbuf;
}

/**
 * daedalus_bridge_in_flight() - does request @cookie still wait for its answer?
 * @dev: the device.
 * @cookie: the request, as the daemon read it.
 *
 * True while the daemon has read the request and its sender still waits
 * (the request is on b->inflight); false once it was answered, failed,
 * timed out or cancelled, and for a cookie of no request. A buffer of its
 * job was still the request's while this is true (see
 * daedalus_bridge_get_dmabuf()): the daemon asks after copying a buffer's
 * bytes, to know that the application did not get it back meanwhile.
 *
 * Context: process context (the daemon's ioctl); takes the bridge lock.
 */
bool daedalus_bridge_in_flight(struct daedalus_dev *dev, u64 cookie)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);
	struct daedalus_request *it;
	bool found = false;

	if (!b)
		return false;
	mutex_lock(&b->lock);
	list_for_each_entry(it, &b->inflight, node) {
		if (it->hdr.cookie == cookie) {
			found = true;
			break;
		}
	}
	mutex_unlock(&b->lock);
	return found;
}

/* HELLO answered (or failed): called with bridge->lock held. */
static void daedalus_hello_finish(struct daedalus_bridge *b,
				  struct daedalus_request *req)
{
	if (req->result || req->reply->status) {
		dev_warn(&b->dev->pdev->dev, "daemon refused the handshake\n");
		return;
	}
	b->ready = true;
	b->last_read = jiffies;
	dev_info(&b->dev->pdev->dev, "daemon connected (protocol v%u, phase %u.%u)\n",
		 b->hello_in.proto_version, b->hello_in.phase / 10,
		 b->hello_in.phase % 10);
}

static int daedalus_bridge_open(struct inode *inode, struct file *file)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);
	struct daedalus_hello hello = {
		.proto_version	= DAEDALUS_PROTO_VERSION,
		.max_payload	= DAEDALUS_MAX_PAYLOAD,
		.phase		= daedalus_phase_id,
	};
	struct daedalus_request *req;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	req = daedalus_req_alloc(DAEDALUS_MSG_HELLO, &hello, sizeof(hello),
				 GLOBAL_ROOT_UID);
	if (!req)
		return -ENOMEM;
	req->posted = true;
	req->finish = daedalus_hello_finish;
	req->reply = &b->hello_reply;

	mutex_lock(&b->lock);
	if (b->connected) {
		mutex_unlock(&b->lock);
		daedalus_req_put(req);
		return -EBUSY;
	}
	b->connected = true;
	b->ready = false;
	memset(&b->hello_in, 0, sizeof(b->hello_in));
	b->hello_reply.buf = &b->hello_in;
	b->hello_reply.max_len = sizeof(b->hello_in);
	b->nr_posted++;
	daedalus_req_queue(b, req);
	mutex_unlock(&b->lock);

	/* The bridge lives until its daemon is gone, even past an unbind. */
	v4l2_device_get(&b->dev->v4l2_dev);
	return nonseekable_open(inode, file);
}

/* Fails every request at once: nobody is left to answer them. */
static int daedalus_bridge_release(struct inode *inode, struct file *file)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);

	mutex_lock(&b->lock);
	b->connected = false;
	b->ready = false;
	daedalus_fail_requests(b, NULL, -ENOTCONN);
	mutex_unlock(&b->lock);
	dev_info(&b->dev->pdev->dev, "daemon disconnected\n");
	v4l2_device_put(&b->dev->v4l2_dev); /* may free b */
	return 0;
}

/* The next request to read, taking the lanes in turn; bridge->lock held. */
static struct daedalus_request *daedalus_next_request(struct daedalus_bridge *b)
{
	unsigned int i, lane;

	for (i = 0; i < DAEDALUS_LANES; i++) {
		lane = (b->next_lane + i) % DAEDALUS_LANES;
		if (!list_empty(&b->lanes[lane]))
			return list_first_entry(&b->lanes[lane],
						struct daedalus_request, node);
	}
	return NULL;
}

static ssize_t daedalus_bridge_read(struct file *file, char __user *buf,
				    size_t count, loff_t *ppos)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);
	struct daedalus_request *req;
	size_t msg_len;
	int ret;

	for (;;) {
		mutex_lock(&b->lock);
		req = daedalus_next_request(b);
		if (req)
			break;
		mutex_unlock(&b->lock);
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(b->readq, READ_ONCE(b->nr_pending));
		if (ret)
			return ret;
	}

	msg_len = sizeof(req->hdr) + req->hdr.payload_len;
	if (count < msg_len) {
		mutex_unlock(&b->lock);
		return -EINVAL;
	}
	list_move_tail(&req->node, &b->inflight);
	b->nr_pending--;
	b->next_lane = (req->lane + 1) % DAEDALUS_LANES;
	req->state = DAEDALUS_REQ_INFLIGHT;
	req->read_at = jiffies;
	b->last_read = req->read_at;
	refcount_inc(&req->ref);
	mutex_unlock(&b->lock);

	/* The header and payload never change once queued: no lock needed. */
	if (copy_to_user(buf, &req->hdr, sizeof(req->hdr)) ||
	    copy_to_user(buf + sizeof(req->hdr), req->payload,
			 req->hdr.payload_len)) {
		/* Not delivered: queue it again, first in its lane. */
		mutex_lock(&b->lock);
		if (req->state == DAEDALUS_REQ_INFLIGHT) {
			list_move(&req->node, &b->lanes[req->lane]);
			req->state = DAEDALUS_REQ_PENDING;
			b->nr_pending++;
		}
		mutex_unlock(&b->lock);
		daedalus_req_put(req);
		return -EFAULT;
	}
	daedalus_req_put(req);
	return msg_len;
}

static bool daedalus_hdr_valid(const struct daedalus_msg_hdr *hdr, size_t count)
{
	unsigned int i;

	if (hdr->magic != DAEDALUS_PROTO_MAGIC ||
	    hdr->version != DAEDALUS_PROTO_VERSION || hdr->flags)
		return false;
	for (i = 0; i < ARRAY_SIZE(hdr->reserved); i++)
		if (hdr->reserved[i])
			return false;
	if (hdr->payload_len > DAEDALUS_MAX_PAYLOAD ||
	    count != sizeof(*hdr) + hdr->payload_len)
		return false;
	if (!(hdr->type & DAEDALUS_MSG_RESPONSE) || hdr->status > MAX_ERRNO)
		return false;
	return true;
}

static bool daedalus_hello_valid(struct daedalus_bridge *b,
				 const struct daedalus_msg_hdr *hdr,
				 const void *payload)
{
	const struct daedalus_hello *hello = payload;
	unsigned int i;

	if (hdr->status)
		return true; /* a refusal; the payload is its message */
	if (hdr->payload_len != sizeof(*hello))
		return false;
	for (i = 0; i < ARRAY_SIZE(hello->reserved); i++)
		if (hello->reserved[i])
			return false;
	if (hello->proto_version != DAEDALUS_PROTO_VERSION) {
		dev_err_ratelimited(&b->dev->pdev->dev,
				    "daemon speaks protocol v%u, kernel v%u\n",
				    hello->proto_version, DAEDALUS_PROTO_VERSION);
		return false;
	}
	return true;
}

static ssize_t daedalus_bridge_write(struct file *file, const char __user *buf,
				     size_t count, loff_t *ppos)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);
	struct daedalus_request *req = NULL, *it;
	struct daedalus_msg_hdr hdr;
	struct daedalus_reply *reply;
	void *payload = NULL;
	ssize_t ret;

	if (count < sizeof(hdr) || count > sizeof(hdr) + DAEDALUS_MAX_PAYLOAD)
		return -EINVAL;
	if (copy_from_user(&hdr, buf, sizeof(hdr)))
		return -EFAULT;
	if (!daedalus_hdr_valid(&hdr, count))
		return -EINVAL;
	if (hdr.payload_len) {
		payload = vmemdup_user(buf + sizeof(hdr), hdr.payload_len);
		if (IS_ERR(payload))
			return PTR_ERR(payload);
	}

	mutex_lock(&b->lock);
	list_for_each_entry(it, &b->inflight, node) {
		if (it->hdr.cookie == hdr.cookie) {
			req = it;
			break;
		}
	}
	ret = -EINVAL;
	if (!req || req->hdr.type != (hdr.type & ~DAEDALUS_MSG_RESPONSE))
		goto out_unlock;
	if (req->hdr.type == DAEDALUS_MSG_HELLO &&
	    !daedalus_hello_valid(b, &hdr, payload))
		goto out_unlock;
	if (req->hdr.type != DAEDALUS_MSG_HELLO && !b->ready)
		goto out_unlock;
	reply = req->reply;
	if (!hdr.status && hdr.payload_len > reply->max_len)
		goto out_unlock;
	if (reply->validate &&
	    !reply->validate(reply, hdr.status, payload, hdr.payload_len))
		goto out_unlock;

	reply->status = hdr.status;
	reply->len = min(hdr.payload_len, reply->max_len);
	if (reply->len)
		memcpy(reply->buf, payload, reply->len);
	daedalus_req_finish(b, req, 0);
	ret = count;

out_unlock:
	mutex_unlock(&b->lock);
	kvfree(payload);
	return ret;
}

static __poll_t daedalus_bridge_poll(struct file *file, poll_table *wait)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);
	__poll_t mask = EPOLLOUT | EPOLLWRNORM;

	poll_wait(file, &b->readq, wait);
	mutex_lock(&b->lock);
	if (b->nr_pending)
		mask |= EPOLLIN | EPOLLRDNORM;
	mutex_unlock(&b->lock);
	return mask;
}

/* The handler a later layer installed (daedalus_bridge_set_ioctl()), if any. */
static long daedalus_bridge_ioctl(struct file *file, unsigned int cmd,
				  unsigned long arg)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);

	if (!b->ioctl)
		return -ENOTTY;
	return b->ioctl(b->dev, cmd, arg);
}

static const struct file_operations daedalus_bridge_fops = {
	.owner		= THIS_MODULE,
	.open		= daedalus_bridge_open,
	.release	= daedalus_bridge_release,
	.read		= daedalus_bridge_read,
	.write		= daedalus_bridge_write,
	.poll		= daedalus_bridge_poll,
	.unlocked_ioctl	= daedalus_bridge_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

/* debugfs "daemon": disconnected, connected (handshake pending) or ready. */
static int daedalus_daemon_show(struct seq_file *m, void *unused)
{
	struct daedalus_bridge *b = m->private;
	const char *state;

	mutex_lock(&b->lock);
	state = b->ready ? "ready" : b->connected ? "connected" : "disconnected";
	mutex_unlock(&b->lock);
	seq_printf(m, "%s\n", state);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(daedalus_daemon);

/*
 * sysfs, /sys/class/misc/daedalus-v4l2/ (world-readable, for a user's
 * `daedalus-v4l2 doctor`): "daemon" as the debugfs file above, "protocol"
 * (DAEDALUS_PROTO_VERSION) and "phase" ("8.N"). misc_register() makes the
 * miscdevice the class device's driver data; the files are removed, and
 * their readers drained, by misc_deregister() before the bridge is freed.
 */
static struct daedalus_bridge *daedalus_sysfs_bridge(struct device *d)
{
	struct miscdevice *misc = dev_get_drvdata(d);

	return container_of(misc, struct daedalus_bridge, misc);
}

static ssize_t daemon_show(struct device *d, struct device_attribute *attr,
			   char *buf)
{
	struct daedalus_bridge *b = daedalus_sysfs_bridge(d);
	const char *state;

	mutex_lock(&b->lock); /* ready and connected, as for the debugfs file */
	state = b->ready ? "ready" : b->connected ? "connected" : "disconnected";
	mutex_unlock(&b->lock);
	return sysfs_emit(buf, "%s\n", state);
}
static DEVICE_ATTR_RO(daemon);

static ssize_t protocol_show(struct device *d, struct device_attribute *attr,
			     char *buf)
{
	return sysfs_emit(buf, "%u\n", DAEDALUS_PROTO_VERSION);
}
static DEVICE_ATTR_RO(protocol);

/* Every phase is 8.N and daedalus_phase_id is 80 + N (8.10 -> 90). */
static ssize_t phase_show(struct device *d, struct device_attribute *attr,
			  char *buf)
{
	return sysfs_emit(buf, "8.%u\n", daedalus_phase_id - 80);
}
static DEVICE_ATTR_RO(phase);

static struct attribute *daedalus_bridge_attrs[] = {
	&dev_attr_daemon.attr,
	&dev_attr_protocol.attr,
	&dev_attr_phase.attr,
	NULL,
};
ATTRIBUTE_GROUPS(daedalus_bridge);

static int daedalus_bridge_init(struct daedalus_dev *dev)
{
	struct daedalus_bridge *b;
	unsigned int i;

	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	b->dev = dev;
	mutex_init(&b->lock);
	for (i = 0; i < DAEDALUS_LANES; i++)
		INIT_LIST_HEAD(&b->lanes[i]);
	INIT_LIST_HEAD(&b->inflight);
	init_waitqueue_head(&b->readq);
	b->misc.minor = MISC_DYNAMIC_MINOR;
	b->misc.name = "daedalus-v4l2";
	b->misc.fops = &daedalus_bridge_fops;
	b->misc.mode = 0600;
	b->misc.groups = daedalus_bridge_groups;
	daedalus_layer_set_priv(dev, &daedalus_bridge_layer, b);
	return 0;
}

static int daedalus_bridge_publish(struct daedalus_dev *dev)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);
	int ret;

	b->debugfs = debugfs_create_dir(DAEDALUS_NAME, NULL);
	debugfs_create_file("daemon", 0400, b->debugfs, b, &daedalus_daemon_fops);
	ret = daedalus_ping_publish(dev);
	if (ret)
		goto err_remove_debugfs;

	ret = misc_register(&b->misc);
	if (ret)
		goto err_remove_debugfs;
	return 0;

err_remove_debugfs:
	debugfs_remove_recursive(b->debugfs);
	b->debugfs = NULL;
	return ret;
}

static void daedalus_bridge_unpublish(struct daedalus_dev *dev)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);

	misc_deregister(&b->misc);
	debugfs_remove_recursive(b->debugfs);
	b->debugfs = NULL;
}

static void daedalus_bridge_exit(struct daedalus_dev *dev)
{
	struct daedalus_bridge *b = daedalus_dev_bridge(dev);

	daedalus_layer_set_priv(dev, &daedalus_bridge_layer, NULL);
	mutex_destroy(&b->lock);
	kfree(b);
}

const struct daedalus_layer daedalus_bridge_layer = {
	.name		= "8.2-bridge",
	.init		= daedalus_bridge_init,
	.publish	= daedalus_bridge_publish,
	.unpublish	= daedalus_bridge_unpublish,
	.exit		= daedalus_bridge_exit,
};
