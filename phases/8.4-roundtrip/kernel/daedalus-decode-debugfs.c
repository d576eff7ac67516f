// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.4 decode trigger, /sys/kernel/debug/daedalus-v4l2/decode.
 *
 * Each open file is one stream. A write(2) of a struct daedalus_decode_req
 * (stream_id 0) followed by its bitstream is one REQ_DECODE round trip
 * through daedalus_decode(); it returns the byte count once the daemon has
 * answered, even when the answer reports a decode error (that is data).
 * read(2) then returns the RESP_FRAME payload of that answer. Closing the
 * file sends CLOSE_STREAM.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "daedalus.h"
#include "daedalus-bridge.h"
#include "daedalus-decode.h"

/**
 * struct daedalus_dbg_stream - one open file of the decode trigger
 * @dev: the device.
 * @lock: one round trip at a time; protects @stream and @result.
 * @stream: the decoder context of this file.
 * @result: the last answer.
 */
struct daedalus_dbg_stream {
	struct daedalus_dev *dev;
	struct mutex lock; /* protects stream, result; serializes round trips */
	struct daedalus_dec_stream stream;
	struct daedalus_decode_result result;
};

static int daedalus_dbg_decode_open(struct inode *inode, struct file *file)
{
	struct daedalus_dbg_stream *s;

	s = kvzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	s->dev = inode->i_private;
	mutex_init(&s->lock);
	daedalus_stream_init(&s->stream);
	file->private_data = s;
	return 0;
}

static int daedalus_dbg_decode_release(struct inode *inode, struct file *file)
{
	struct daedalus_dbg_stream *s = file->private_data;

	daedalus_stream_close(s->dev, &s->stream);
	mutex_destroy(&s->lock);
	kvfree(s);
	return 0;
}

static ssize_t daedalus_dbg_decode_write(struct file *file,
					 const char __user *buf, size_t count,
					 loff_t *ppos)
{
	struct daedalus_dbg_stream *s = file->private_data;
	struct daedalus_decode_req *msg;
	ssize_t ret;

	if (count < sizeof(*msg) || count > DAEDALUS_MAX_PAYLOAD)
		return -EINVAL;
	msg = vmemdup_user(buf, count);
	if (IS_ERR(msg))
		return PTR_ERR(msg);

	mutex_lock(&s->lock);
	s->result.raw_len = 0;
	ret = daedalus_decode(s->dev, &s->stream, msg, count, &s->result);
	mutex_unlock(&s->lock);

	kvfree(msg);
	return ret ? ret : count;
}

static ssize_t daedalus_dbg_decode_read(struct file *file, char __user *buf,
					size_t count, loff_t *ppos)
{
	struct daedalus_dbg_stream *s = file->private_data;
	ssize_t ret;

	mutex_lock(&s->lock);
	ret = simple_read_from_buffer(buf, count, ppos, s->result.raw,
				      s->result.raw_len);
	mutex_unlock(&s->lock);
	return ret;
}

static const struct file_operations daedalus_dbg_decode_fops = {
	.owner		= THIS_MODULE,
	.open		= daedalus_dbg_decode_open,
	.release	= daedalus_dbg_decode_release,
	.write		= daedalus_dbg_decode_write,
	.read		= daedalus_dbg_decode_read,
	.llseek		= default_llseek,
};

static int daedalus_roundtrip_publish(struct daedalus_dev *dev)
{
	debugfs_create_file("decode", 0600, daedalus_debugfs_dir(dev), dev,
			    &daedalus_dbg_decode_fops);
	return 0;
}

const struct daedalus_layer daedalus_roundtrip_layer = {
	.name		= "8.4-roundtrip",
	.publish	= daedalus_roundtrip_publish,
};
