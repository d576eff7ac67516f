/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: the decode request path (phase 8.4).
 *
 * One struct daedalus_dec_stream is one decoder context in the daemon. A
 * caller builds a REQ_DECODE message with daedalus_decode_msg_alloc(), fills
 * the bitstream, and sends it with daedalus_decode(); the daemon's RESP_FRAME
 * is validated in full before it is accepted. The debugfs trigger (phase 8.4)
 * and the V4L2 driver (phase 8.5) use this same path.
 */
#ifndef _DAEDALUS_DECODE_H
#define _DAEDALUS_DECODE_H

#include <linux/types.h>

#include "daedalus_v4l2_proto.h"

struct daedalus_attach;
struct daedalus_caller;
struct daedalus_dev;

/* Largest RESP_FRAME payload. */
#define DAEDALUS_RESP_MAX	(sizeof(struct daedalus_frame_resp) + \
				 DAEDALUS_MAX_FRAMES * \
				 sizeof(struct daedalus_frame_info) + \
				 DAEDALUS_MAX_MSG)

/**
 * struct daedalus_dec_stream - one decoder context
 * @id: stream id sent to the daemon; never reused while the module is
 *	loaded (64 bits).
 * @codec: enum daedalus_codec, fixed by the first request (0 before).
 * @used: a request was sent, so the daemon may hold a decoder for @id.
 */
struct daedalus_dec_stream {
	u64 id;
	u32 codec;
	bool used;
};

/**
 * struct daedalus_decode_result - a validated RESP_FRAME
 * @resp: the fixed part.
 * @frames: @resp.nr_frames entries.
 * @msg: @resp.msg_len bytes of message, NUL-terminated here.
 * @raw: the payload as received.
 * @raw_len: bytes in @raw.
 */
struct daedalus_decode_result {
	struct daedalus_frame_resp resp;
	struct daedalus_frame_info frames[DAEDALUS_MAX_FRAMES];
	char msg[DAEDALUS_MAX_MSG + 1];
	u8 raw[DAEDALUS_RESP_MAX];
	u32 raw_len;
};

void daedalus_stream_init(struct daedalus_dec_stream *stream);
void daedalus_stream_close(struct daedalus_dev *dev,
			   struct daedalus_dec_stream *stream);
int daedalus_decode_check_req(struct daedalus_dec_stream *stream,
			      const struct daedalus_decode_req *req,
			      size_t len, u32 flags);
int daedalus_decode_op(struct daedalus_dev *dev,
		       struct daedalus_caller *caller,
		       struct daedalus_dec_stream *stream, u16 type, u32 flags,
		       struct daedalus_decode_req *msg, size_t len,
		       const struct daedalus_attach *attach,
		       struct daedalus_decode_result *result);

static inline int daedalus_decode(struct daedalus_dev *dev,
				  struct daedalus_dec_stream *stream,
				  struct daedalus_decode_req *msg, size_t len,
				  struct daedalus_decode_result *result)
{
	return daedalus_decode_op(dev, NULL, stream, DAEDALUS_MSG_DECODE,
				  DAEDALUS_DECODE_FLUSH, msg, len, NULL, result);
}

#endif /* _DAEDALUS_DECODE_H */
