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
 * A request lives on its caller's stack. It sits on bridge->pending until
 * the daemon reads it, then on bridge->inflight until the daemon answers,
 * the caller's timeout expires or the daemon closes the device; whichever
 * comes first takes it off the list under bridge->lock, so exactly one of
 * them finishes it. The daemon is not trusted: every message it writes is
 * validated in full before it can touch a request.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "daedalus.h"
#include "daedalus-bridge.h"
#include "daedalus_v4l2_proto.h"

static unsigned int daemon_timeout_ms = 5000;
module_param(daemon_timeout_ms, uint, 0644);
MODULE_PARM_DESC(daemon_timeout_ms,
		 "how long a request waits for daedalusd before failing (ms)");

struct daedalus_request {
	struct list_head node;
	struct daedalus_msg_hdr hdr;
	const void *payload;
	struct daedalus_reply *reply;
	struct completion done;
	int result;
	void (*finish)(struct daedalus_request *req);
};

/**
 * struct daedalus_bridge - state of /dev/daedalus-v4l2
 * @misc: the character device.
 * @dev: the device this bridge serves.
 * @lock: protects every member below it.
 * @pending: requests queued for the daemon to read.
 * @inflight: requests read by the daemon and waiting for an answer.
 * @connected: a daemon has the device open.
 * @ready: the daemon answered HELLO with our protocol version.
 * @next_cookie: the last cookie handed out; cookies are never reused.
 * @hello: the HELLO request queued at open.
 * @hello_out: HELLO payload sent to the daemon.
 * @hello_in: HELLO payload received from the daemon.
 * @hello_reply: where @hello_in is described.
 * @readq: the daemon waits here for requests.
 * @debugfs: /sys/kernel/debug/daedalus-v4l2.
 */
struct daedalus_bridge {
	struct miscdevice misc;
	struct daedalus_dev *dev;
	struct mutex lock; /* protects the lists, state and cookies below */
	struct list_head pending;
	struct list_head inflight;
	bool connected;
	bool ready;
	u64 next_cookie;
	struct daedalus_request hello;
	struct daedalus_hello hello_out;
	struct daedalus_hello hello_in;
	struct daedalus_reply hello_reply;
	wait_queue_head_t readq;
	struct dentry *debugfs;
};

static struct daedalus_bridge *daedalus_file_to_bridge(struct file *file)
{
	return container_of(file->private_data, struct daedalus_bridge, misc);
}

static void daedalus_req_init(struct daedalus_request *req, u16 type,
			      const void *payload, u32 len,
			      struct daedalus_reply *reply)
{
	memset(req, 0, sizeof(*req));
	INIT_LIST_HEAD(&req->node);
	req->hdr.magic = DAEDALUS_PROTO_MAGIC;
	req->hdr.version = DAEDALUS_PROTO_VERSION;
	req->hdr.type = type;
	req->hdr.payload_len = len;
	req->payload = payload;
	req->reply = reply;
	init_completion(&req->done);
}

/* Called with bridge->lock held, once per request. */
static void daedalus_req_finish(struct daedalus_request *req, int result)
{
	list_del_init(&req->node);
	req->result = result;
	if (req->finish)
		req->finish(req);
	else
		complete(&req->done);
}

/* Called with bridge->lock held. */
static void daedalus_req_queue(struct daedalus_bridge *b,
			       struct daedalus_request *req)
{
	req->hdr.cookie = ++b->next_cookie;
	list_add_tail(&req->node, &b->pending);
	wake_up_interruptible(&b->readq);
}

/**
 * daedalus_bridge_call() - send a request to daedalusd and wait for the answer
 * @dev: the device.
 * @type: enum daedalus_msg_type.
 * @payload: request payload; must stay valid until this returns.
 * @len: bytes of @payload, at most DAEDALUS_MAX_PAYLOAD.
 * @reply: where the answer goes (@reply->buf and @reply->max_len set).
 *
 * Context: process context; sleeps up to daemon_timeout_ms. A fatal signal
 * ends the wait early.
 * Return: 0 when the daemon answered (its own status is in @reply->status),
 * -ENOTCONN without a daemon or when it goes away, -ETIMEDOUT when it does not
 * answer in time, -EINTR on a fatal signal, -EINVAL for a bad request.
 */
int daedalus_bridge_call(struct daedalus_dev *dev, u16 type,
			 const void *payload, u32 len,
			 struct daedalus_reply *reply)
{
	struct daedalus_bridge *b = dev->bridge;
	struct daedalus_request req;
	long left;

	if (!b || len > DAEDALUS_MAX_PAYLOAD || type & DAEDALUS_MSG_RESPONSE)
		return -EINVAL;

	daedalus_req_init(&req, type, payload, len, reply);
	mutex_lock(&b->lock);
	if (!b->ready) {
		mutex_unlock(&b->lock);
		return -ENOTCONN;
	}
	daedalus_req_queue(b, &req);
	mutex_unlock(&b->lock);

	left = wait_for_completion_killable_timeout(&req.done,
						    msecs_to_jiffies(daemon_timeout_ms));

	mutex_lock(&b->lock);
	if (!list_empty(&req.node)) {
		/* Not finished by the daemon or by release: we give up. */
		list_del_init(&req.node);
		req.result = left < 0 ? -EINTR : -ETIMEDOUT;
		if (!left)
			dev_warn_ratelimited(&dev->pdev->dev,
					     "daemon did not answer request %llu in %u ms\n",
					     req.hdr.cookie, daemon_timeout_ms);
	}
	mutex_unlock(&b->lock);
	return req.result;
}
EXPORT_SYMBOL_GPL(daedalus_bridge_call);

struct dentry *daedalus_debugfs_dir(struct daedalus_dev *dev)
{
	return dev->bridge ? dev->bridge->debugfs : NULL;
}

/* HELLO answered (or failed): called with bridge->lock held. */
static void daedalus_hello_finish(struct daedalus_request *req)
{
	struct daedalus_bridge *b = container_of(req, struct daedalus_bridge,
						 hello);

	if (req->result || req->reply->status) {
		dev_warn(&b->dev->pdev->dev, "daemon refused the handshake\n");
		return;
	}
	b->ready = true;
	dev_info(&b->dev->pdev->dev, "daemon connected (protocol v%u, phase %u.%u)\n",
		 b->hello_in.proto_version, b->hello_in.phase / 10,
		 b->hello_in.phase % 10);
}

static int daedalus_bridge_open(struct inode *inode, struct file *file)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;

	mutex_lock(&b->lock);
	if (b->connected) {
		mutex_unlock(&b->lock);
		return -EBUSY;
	}
	b->connected = true;
	b->ready = false;

	memset(&b->hello_out, 0, sizeof(b->hello_out));
	b->hello_out.proto_version = DAEDALUS_PROTO_VERSION;
	b->hello_out.max_payload = DAEDALUS_MAX_PAYLOAD;
	b->hello_out.phase = daedalus_phase_id;
	memset(&b->hello_in, 0, sizeof(b->hello_in));
	b->hello_reply.buf = &b->hello_in;
	b->hello_reply.max_len = sizeof(b->hello_in);
	daedalus_req_init(&b->hello, DAEDALUS_MSG_HELLO, &b->hello_out,
			  sizeof(b->hello_out), &b->hello_reply);
	b->hello.finish = daedalus_hello_finish;
	daedalus_req_queue(b, &b->hello);
	mutex_unlock(&b->lock);

	ret = nonseekable_open(inode, file);
	return ret;
}

/* Fails every request at once: nobody is left to answer them. */
static int daedalus_bridge_release(struct inode *inode, struct file *file)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);
	struct daedalus_request *req, *tmp;

	mutex_lock(&b->lock);
	list_for_each_entry_safe(req, tmp, &b->pending, node)
		daedalus_req_finish(req, -ENOTCONN);
	list_for_each_entry_safe(req, tmp, &b->inflight, node)
		daedalus_req_finish(req, -ENOTCONN);
	b->connected = false;
	b->ready = false;
	mutex_unlock(&b->lock);
	dev_info(&b->dev->pdev->dev, "daemon disconnected\n");
	return 0;
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
		req = list_first_entry_or_null(&b->pending,
					       struct daedalus_request, node);
		if (req)
			break;
		mutex_unlock(&b->lock);
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(b->readq,
					       !list_empty(&b->pending));
		if (ret)
			return ret;
	}

	msg_len = sizeof(req->hdr) + req->hdr.payload_len;
	if (count < msg_len) {
		ret = -EINVAL;
		goto out_unlock;
	}
	if (copy_to_user(buf, &req->hdr, sizeof(req->hdr)) ||
	    copy_to_user(buf + sizeof(req->hdr), req->payload,
			 req->hdr.payload_len)) {
		ret = -EFAULT;
		goto out_unlock;
	}
	list_move_tail(&req->node, &b->inflight);
	ret = msg_len;

out_unlock:
	mutex_unlock(&b->lock);
	return ret;
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
		payload = memdup_user(buf + sizeof(hdr), hdr.payload_len);
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
	daedalus_req_finish(req, 0);
	ret = count;

out_unlock:
	mutex_unlock(&b->lock);
	kfree(payload);
	return ret;
}

static __poll_t daedalus_bridge_poll(struct file *file, poll_table *wait)
{
	struct daedalus_bridge *b = daedalus_file_to_bridge(file);
	__poll_t mask = EPOLLOUT | EPOLLWRNORM;

	poll_wait(file, &b->readq, wait);
	mutex_lock(&b->lock);
	if (!list_empty(&b->pending))
		mask |= EPOLLIN | EPOLLRDNORM;
	mutex_unlock(&b->lock);
	return mask;
}

static const struct file_operations daedalus_bridge_fops = {
	.owner		= THIS_MODULE,
	.open		= daedalus_bridge_open,
	.release	= daedalus_bridge_release,
	.read		= daedalus_bridge_read,
	.write		= daedalus_bridge_write,
	.poll		= daedalus_bridge_poll,
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

static int daedalus_bridge_init(struct daedalus_dev *dev)
{
	struct daedalus_bridge *b;

	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	b->dev = dev;
	mutex_init(&b->lock);
	INIT_LIST_HEAD(&b->pending);
	INIT_LIST_HEAD(&b->inflight);
	init_waitqueue_head(&b->readq);
	b->misc.minor = MISC_DYNAMIC_MINOR;
	b->misc.name = "daedalus-v4l2";
	b->misc.fops = &daedalus_bridge_fops;
	b->misc.mode = 0600;
	dev->bridge = b;
	return 0;
}

static int daedalus_bridge_publish(struct daedalus_dev *dev)
{
	struct daedalus_bridge *b = dev->bridge;
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
	struct daedalus_bridge *b = dev->bridge;

	misc_deregister(&b->misc);
	debugfs_remove_recursive(b->debugfs);
	b->debugfs = NULL;
}

static void daedalus_bridge_exit(struct daedalus_dev *dev)
{
	struct daedalus_bridge *b = dev->bridge;

	dev->bridge = NULL;
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
