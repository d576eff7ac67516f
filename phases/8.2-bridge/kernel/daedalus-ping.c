// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.2 ping-pong trigger, /sys/kernel/debug/daedalus-v4l2/ping.
 *
 * Each write(2) of 1..DAEDALUS_MAX_PAYLOAD bytes sends them to daedalusd as
 * one PING request and waits for the answer; it returns the byte count when
 * the daemon answered, -ENOTCONN without a daemon, -ETIMEDOUT when it did not
 * answer in time and -EIO when it answered with an error status. read(2)
 * then returns the payload of that answer. The state is per open file.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "daedalus.h"
#include "daedalus-bridge.h"
#include "daedalus_v4l2_proto.h"

/**
 * struct daedalus_ping - one open file of the ping trigger
 * @dev: the device.
 * @lock: serializes round trips on this file and protects @echo, @echo_len.
 * @echo: payload of the last answer.
 * @echo_len: bytes in @echo.
 */
struct daedalus_ping {
	struct daedalus_dev *dev;
	struct mutex lock; /* protects echo, echo_len; one round trip at a time */
	void *echo;
	u32 echo_len;
};

static int daedalus_ping_open(struct inode *inode, struct file *file)
{
	struct daedalus_ping *ping;

	ping = kzalloc(sizeof(*ping), GFP_KERNEL);
	if (!ping)
		return -ENOMEM;
	ping->dev = inode->i_private;
	mutex_init(&ping->lock);
	file->private_data = ping;
	return 0;
}

static int daedalus_ping_release(struct inode *inode, struct file *file)
{
	struct daedalus_ping *ping = file->private_data;

	kvfree(ping->echo);
	mutex_destroy(&ping->lock);
	kfree(ping);
	return 0;
}

static ssize_t daedalus_ping_write(struct file *file, const char __user *buf,
				   size_t count, loff_t *ppos)
{
	struct daedalus_ping *ping = file->private_data;
	struct daedalus_reply reply = {};
	void *out, *in;
	ssize_t ret;

	if (!count || count > DAEDALUS_MAX_PAYLOAD)
		return -EINVAL;
	out = kvmalloc(count, GFP_KERNEL);
	in = kvmalloc(count, GFP_KERNEL);
	if (!out || !in) {
		ret = -ENOMEM;
		goto out_free;
	}
	if (copy_from_user(out, buf, count)) {
		ret = -EFAULT;
		goto out_free;
	}
	reply.buf = in;
	reply.max_len = count;

	mutex_lock(&ping->lock);
	ret = daedalus_bridge_call(ping->dev, DAEDALUS_MSG_PING, out, count,
				   &reply);
	if (!ret && reply.status)
		ret = -EIO;
	if (!ret) {
		kvfree(ping->echo);
		ping->echo = in;
		ping->echo_len = reply.len;
		in = NULL;
		ret = count;
	}
	mutex_unlock(&ping->lock);

out_free:
	kvfree(in);
	kvfree(out);
	return ret;
}

static ssize_t daedalus_ping_read(struct file *file, char __user *buf,
				  size_t count, loff_t *ppos)
{
	struct daedalus_ping *ping = file->private_data;
	ssize_t ret;

	mutex_lock(&ping->lock);
	ret = simple_read_from_buffer(buf, count, ppos, ping->echo,
				      ping->echo_len);
	mutex_unlock(&ping->lock);
	return ret;
}

static const struct file_operations daedalus_ping_fops = {
	.owner		= THIS_MODULE,
	.open		= daedalus_ping_open,
	.release	= daedalus_ping_release,
	.write		= daedalus_ping_write,
	.read		= daedalus_ping_read,
	.llseek		= default_llseek,
};

int daedalus_ping_publish(struct daedalus_dev *dev)
{
	debugfs_create_file("ping", 0600, daedalus_debugfs_dir(dev), dev,
			    &daedalus_ping_fops);
	return 0;
}
