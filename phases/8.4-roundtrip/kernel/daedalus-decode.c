// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.4 layer, the decode request path.
 *
 * Reading order: daedalus_decode() sends a REQ_DECODE through the bridge and
 * daedalus_resp_valid() decides whether the daemon's RESP_FRAME is
 * acceptable; daedalus_decode_check_req() checks a request before it leaves.
 * Streams are numbered from one global counter, so a stream id is never
 * reused while the module is loaded.
 */
#include <linux/atomic.h>
#include <linux/errno.h>
#include <linux/string.h>

#include "daedalus.h"
#include "daedalus-bridge.h"
#include "daedalus-decode.h"

static atomic64_t daedalus_next_stream = ATOMIC64_INIT(0);

static bool daedalus_zero(const u32 *words, unsigned int n)
{
	while (n--)
		if (*words++)
			return false;
	return true;
}

void daedalus_stream_init(struct daedalus_dec_stream *stream)
{
	memset(stream, 0, sizeof(*stream));
	stream->id = atomic64_inc_return(&daedalus_next_stream);
}

/*
 * Tells the daemon to drop the stream's decoder, without waiting for its
 * answer: a closing file never waits for the daemon. Errors are not fatal
 * (without a daemon there is no decoder to drop).
 */
void daedalus_stream_close(struct daedalus_dev *dev,
			   struct daedalus_dec_stream *stream)
{
	struct daedalus_stream msg = { .stream_id = stream->id };

	if (!stream->used)
		return;
	stream->used = false;
	daedalus_bridge_post(dev, DAEDALUS_MSG_CLOSE_STREAM, &msg, sizeof(msg));
}

/*
 * daedalus_decode_check_req() - is @req (with @len bytes in all) a request
 * this stream may send, with flags among @flags? The stream id is the
 * kernel's to fill: it must be 0. The bitstream follows @req, all of it,
 * except with DAEDALUS_DECODE_DMABUF: then it is in a buffer of the job and
 * nothing follows; only then may @req->bitstream_offset be set.
 */
int daedalus_decode_check_req(struct daedalus_dec_stream *stream,
			      const struct daedalus_decode_req *req, size_t len,
			      u32 flags)
{
	if (len < sizeof(*req) || len > DAEDALUS_MAX_PAYLOAD)
		return -EINVAL;
	if (req->stream_id || req->flags & ~flags ||
	    !daedalus_zero(req->reserved, ARRAY_SIZE(req->reserved)))
		return -EINVAL;
	if (req->flags & DAEDALUS_DECODE_DMABUF) {
		if (len != sizeof(*req))
			return -EINVAL;
	} else if (req->bitstream_offset ||
		   req->bitstream_len != len - sizeof(*req)) {
		return -EINVAL;
	}
	if (!daedalus_coded_fmt_by_codec(req->codec))
		return -EINVAL;
	if (stream->codec && stream->codec != req->codec)
		return -EINVAL;
	return 0;
}

static bool daedalus_frame_valid(const struct daedalus_frame_info *f)
{
	/* a layout of the decoded format table, offered by the node or not */
	if (!daedalus_decoded_fmt_by_wire(f->pixfmt))
		return false;
	if (!f->width || f->width > DAEDALUS_MAX_WIDTH ||
	    !f->height || f->height > DAEDALUS_MAX_HEIGHT)
		return false;
	if (f->flags & ~(DAEDALUS_FRAME_KEY | DAEDALUS_FRAME_CORRUPT))
		return false;
	/* Any colour code point goes: unknown ones count as not signalled. */
	return !f->reserved;
}

/*
 * The daemon is not trusted: a RESP_FRAME is accepted only if every field is
 * in range and the lengths add up exactly. Called with the bridge lock held.
 */
static bool daedalus_resp_valid(const struct daedalus_reply *reply, u32 status,
				const void *payload, u32 len)
{
	const struct daedalus_frame_resp *resp = payload;
	const struct daedalus_frame_info *frames;
	unsigned int i;

	if (status)
		return true; /* the daemon could not serve it at all */
	if (len < sizeof(*resp))
		return false;
	if (!daedalus_zero(resp->reserved, ARRAY_SIZE(resp->reserved)))
		return false;
	if (resp->nr_frames > DAEDALUS_MAX_FRAMES ||
	    resp->msg_len > DAEDALUS_MAX_MSG)
		return false;
	if (len != sizeof(*resp) + resp->nr_frames * sizeof(*frames) +
		   resp->msg_len)
		return false;
	switch (resp->status) {
	case DAEDALUS_DECODE_OK:
		if (resp->error)
			return false;
		break;
	case DAEDALUS_DECODE_ERROR:
		if (!resp->error || resp->error > MAX_ERRNO || resp->nr_frames)
			return false;
		break;
	default:
		return false;
	}
	frames = (const void *)(resp + 1);
	for (i = 0; i < resp->nr_frames; i++)
		if (!daedalus_frame_valid(&frames[i]))
			return false;
	return true;
}

/**
 * daedalus_decode_op() - one REQ_DECODE (or FEED) / RESP_FRAME round trip
 * @dev: the device.
 * @caller: who the request is for (see daedalus_bridge_call_as()); or NULL.
 * @stream: the decoder context; fixes its codec on first use.
 * @type: DAEDALUS_MSG_DECODE, or DAEDALUS_MSG_FEED (phase 8.5).
 * @flags: the DAEDALUS_DECODE_* flags @type allows.
 * @msg: struct daedalus_decode_req followed by the bitstream; stream_id 0.
 * @len: bytes of @msg.
 * @attach: the buffers of the job (see daedalus_bridge_call_attached()):
 *	required with DAEDALUS_DECODE_DMABUF in @msg's flags (the bitstream is
 *	in buffer 0), NULL otherwise.
 * @result: the validated answer.
 *
 * Context: process context; sleeps until the daemon answers or times out.
 * Return: 0 when the daemon answered (a decode error is reported in
 * @result->resp.status), -EINVAL for a bad request, -EIO when the daemon
 * refused to serve it, or a bridge error (-ENOTCONN, -ETIMEDOUT, -ECANCELED,
 * -EINTR, -ENOMEM).
 */
int daedalus_decode_op(struct daedalus_dev *dev,
		       struct daedalus_caller *caller,
		       struct daedalus_dec_stream *stream, u16 type, u32 flags,
		       struct daedalus_decode_req *msg, size_t len,
		       const struct daedalus_attach *attach,
		       struct daedalus_decode_result *result)
{
	struct daedalus_reply reply = {
		.buf		= result->raw,
		.max_len	= sizeof(result->raw),
		.validate	= daedalus_resp_valid,
	};
	const struct daedalus_frame_resp *resp;
	int ret;

	ret = daedalus_decode_check_req(stream, msg, len, flags);
	if (ret)
		return ret;
	if (!(msg->flags & DAEDALUS_DECODE_DMABUF) != !attach)
		return -EINVAL;
	msg->stream_id = stream->id;
	stream->codec = msg->codec;
	stream->used = true;

	ret = daedalus_bridge_call_attached(dev, caller, type, msg, len, attach,
					    &reply);
	msg->stream_id = 0;
	if (ret)
		return ret;
	if (reply.status)
		return -EIO;

	resp = (const void *)result->raw;
	result->raw_len = reply.len;
	result->resp = *resp;
	memcpy(result->frames, resp + 1,
	       resp->nr_frames * sizeof(result->frames[0]));
	memcpy(result->msg, (const u8 *)(resp + 1) +
	       resp->nr_frames * sizeof(result->frames[0]), resp->msg_len);
	result->msg[resp->msg_len] = '\0';
	return 0;
}
