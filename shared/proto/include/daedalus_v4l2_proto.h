/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * daedalus-v4l2 wire protocol between the kernel module and daedalusd.
 *
 * This header is the only definition of the wire format. The kernel module
 * includes it; the daemon gets the same layout from the C compiler through
 * cffi (API mode), and a layout test pins every size and offset.
 *
 * Transport: the misc character device /dev/daedalus-v4l2 (mode 0600, one
 * daemon at a time).
 *  - read(2) returns exactly one message: a struct daedalus_msg_hdr followed
 *    by hdr.payload_len bytes. A buffer too small for the next message gets
 *    -EINVAL and the message stays queued. O_NONBLOCK gives -EAGAIN when no
 *    message is queued; poll(2) reports POLLIN when one is.
 *  - write(2) takes exactly one message: the byte count must equal
 *    sizeof(struct daedalus_msg_hdr) + hdr.payload_len.
 *
 * Every message written by the daemon is validated before anything else
 * happens: magic, version, flags and reserved fields zero, payload length
 * matching the write and at most DAEDALUS_MAX_PAYLOAD, a response type, a
 * cookie that names a request currently waiting for its answer, and a payload
 * valid for its type. Anything else is rejected with -EINVAL and changes
 * nothing.
 *
 * Session: right after open(2) the kernel queues a HELLO request. Until the
 * daemon answers it with a HELLO response carrying the same protocol version,
 * the kernel sends no other request. A request that gets no answer within its
 * timeout fails with -ETIMEDOUT; when the daemon closes the device every
 * waiting request fails with -ENOTCONN at once.
 */
#ifndef _UAPI_DAEDALUS_V4L2_PROTO_H
#define _UAPI_DAEDALUS_V4L2_PROTO_H

#include <linux/types.h>

/* "DV4L" in memory on little-endian machines. */
#define DAEDALUS_PROTO_MAGIC		0x4c345644
#define DAEDALUS_PROTO_VERSION		1

/* Largest payload of one message, in bytes. */
#define DAEDALUS_MAX_PAYLOAD		(1024 * 1024)

/* Set in daedalus_msg_hdr.type on the daemon's answers. */
#define DAEDALUS_MSG_RESPONSE		0x8000

/**
 * enum daedalus_msg_type - what a message carries
 * @DAEDALUS_MSG_HELLO: kernel -> daemon on connect; payload
 *	struct daedalus_hello. The answer carries the daemon's struct
 *	daedalus_hello.
 * @DAEDALUS_MSG_PING: kernel -> daemon; any payload. The answer must carry
 *	the same bytes.
 */
enum daedalus_msg_type {
	DAEDALUS_MSG_HELLO	= 1,
	DAEDALUS_MSG_PING	= 2,
};

/**
 * struct daedalus_msg_hdr - header of every message, both directions
 * @magic: DAEDALUS_PROTO_MAGIC.
 * @version: DAEDALUS_PROTO_VERSION.
 * @type: enum daedalus_msg_type; answers add DAEDALUS_MSG_RESPONSE.
 * @cookie: request identifier chosen by the kernel, unique for the life of
 *	the module; an answer echoes the cookie of its request.
 * @payload_len: bytes of payload following the header.
 * @flags: none defined; must be zero.
 * @status: answers: 0 on success or a positive errno saying why the daemon
 *	could not serve the request (the payload may then hold a UTF-8
 *	message). Requests: zero.
 * @reserved: must be zero.
 *
 * Structure used by read(2) and write(2) on /dev/daedalus-v4l2.
 */
struct daedalus_msg_hdr {
	__u32 magic;
	__u16 version;
	__u16 type;
	__u64 cookie;
	__u32 payload_len;
	__u32 flags;
	__u32 status;
	__u32 reserved[5];
};

/**
 * struct daedalus_hello - payload of HELLO, both directions
 * @proto_version: DAEDALUS_PROTO_VERSION of the sender.
 * @max_payload: largest payload the sender accepts.
 * @phase: roadmap phase of the sender times 10 (8.2 -> 82), informational.
 * @reserved: must be zero.
 */
struct daedalus_hello {
	__u32 proto_version;
	__u32 max_payload;
	__u32 phase;
	__u32 reserved[5];
};

#endif /* _UAPI_DAEDALUS_V4L2_PROTO_H */
