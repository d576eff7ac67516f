// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.6, the stateless codec controls on the node.
 *
 * The roadmap brings the V4L2 stateless controls of VP9, H.264 and AV1 to
 * the node with this phase. They are data: each codec's row of the codec
 * table (daedalus-formats.c) points to its controls (struct
 * daedalus_codec_ctrls, in its codec file), and daedalus_ctrls_add()
 * registers those of every codec the node offers on each open file, next to
 * phase 8.5's V4L2_CID_MIN_BUFFERS_FOR_CAPTURE, through the m2m layer's hook
 * (daedalus_m2m.add_ctrls, set by this layer's init in daedalus-dmabuf.c).
 * Phases 8.1-8.5 register none of them.
 *
 * Every codec's controls are there whichever coded format is set, so that
 * an application sees all of them (v4l2-ctl --list-ctrls-menus). The V4L2
 * core gives each its default (a valid one) and checks every value set
 * (range and menu checks; the compound controls' own validation). Nothing
 * reads them: on this stateful node the daemon parses the bitstream itself,
 * so setting a control never changes a decode.
 *
 * Locking: none of its own. The handler is the file's, being set up by
 * open() before the file is usable; the table is constant.
 */
#include <media/v4l2-ctrls.h>

#include "daedalus.h"
#include "daedalus-ctrls.h"

/**
 * daedalus_ctrls_add() - the codecs' controls, on a file's control handler
 * @dev: the device; its offered codecs are the ones whose controls are added.
 * @hdl: the handler of the file being opened.
 *
 * The m2m layer's add_ctrls hook. Errors are recorded in @hdl (the first
 * one stays there and makes later additions no-ops). Called from open(), in
 * process context.
 */
void daedalus_ctrls_add(struct daedalus_dev *dev, struct v4l2_ctrl_handler *hdl)
{
	const struct daedalus_coded_fmt *fmt;
	unsigned int i, j;

	for (i = 0; (fmt = daedalus_coded_fmt_by_index(dev, i)); i++) {
		if (!fmt->ctrls)
			continue;
		for (j = 0; j < fmt->ctrls->num; j++)
			v4l2_ctrl_new_custom(hdl, &fmt->ctrls->cfgs[j], NULL);
	}
}
