// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.7 layer, the media controller.
 *
 * Publishes /dev/mediaN for the node: the memory-to-memory topology that
 * v4l2-mem2mem builds (v4l2_m2m_register_media_controller()), a source
 * entity (the OUTPUT queue's DMA), the decoder (function
 * MEDIA_ENT_F_PROC_VIDEO_DECODER) and a sink entity (the CAPTURE queue's
 * DMA), linked source -> proc -> sink, with the video node's interface
 * linked to both DMA entities. Applications find what the node is from it
 * (v4l2-compliance's decoder tests ask for the function).
 *
 * Probe order, the style guide's: v4l2_device_register (8.1's probe) ->
 * v4l2_m2m_init (8.5's init) -> media_device_init (this layer's init, which
 * also points the V4L2 device at the media device) -> video_register_device
 * (8.1's publish) -> v4l2_m2m_register_media_controller ->
 * media_device_register (this layer's publish). Teardown is the reverse:
 * this layer's unpublish runs before 8.1's, its exit after the node's last
 * file closed (the entities reference the m2m device, which 8.5's exit
 * frees after this one's).
 *
 * Lifetime: the media device is embedded in this layer's state, which lives
 * until the layer's exit. /dev/mediaN has its own lifetime. The media core
 * registers its chardev as owned by this module, so while a process holds it
 * open rmmod is refused. An unbind is not: after media_device_unregister()
 * the process's ioctls fail (EIO), and its last close frees the devnode the
 * media core allocated, touching nothing of ours.
 *
 * Locking: none of its own. The media core serializes the graph
 * (media_device.graph_mutex); this layer's state is written by init and
 * exit only, when nothing is published.
 */
#include <media/media-device.h>
#include <media/v4l2-device.h>
#include <media/v4l2-mem2mem.h>

#include "daedalus.h"
#include "daedalus-layer.h"
#include "daedalus-m2m.h"
#include "daedalus-mc.h"

/**
 * struct daedalus_mc - this layer's state
 * @mdev: the media device behind /dev/mediaN.
 */
struct daedalus_mc {
	struct media_device mdev;
};

static struct daedalus_mc *daedalus_dev_mc(struct daedalus_dev *dev)
{
	return daedalus_layer_priv(dev, &daedalus_mc_layer);
}

static int daedalus_mc_init(struct daedalus_dev *dev)
{
	struct daedalus_mc *mc;
	struct media_device *mdev;

	mc = kzalloc(sizeof(*mc), GFP_KERNEL);
	if (!mc)
		return -ENOMEM;
	mdev = &mc->mdev;
	mdev->dev = &dev->pdev->dev;
	strscpy(mdev->model, DAEDALUS_NAME, sizeof(mdev->model));
	strscpy(mdev->driver_name, DAEDALUS_DRIVER_NAME,
		sizeof(mdev->driver_name));
	/* The same string as VIDIOC_QUERYCAP's (daedalus-video.c). */
	snprintf(mdev->bus_info, sizeof(mdev->bus_info), "platform:%s",
		 DAEDALUS_NAME);
	media_device_init(mdev);
	dev->v4l2_dev.mdev = mdev;
	daedalus_layer_set_priv(dev, &daedalus_mc_layer, mc);
	return 0;
}

static int daedalus_mc_publish(struct daedalus_dev *dev)
{
	struct daedalus_mc *mc = daedalus_dev_mc(dev);
	struct daedalus_m2m *m2m = daedalus_dev_m2m(dev);
	int ret;

	ret = v4l2_m2m_register_media_controller(m2m->m2m_dev, &dev->vfd,
						 MEDIA_ENT_F_PROC_VIDEO_DECODER);
	if (ret) {
		v4l2_err(&dev->v4l2_dev,
			 "failed to register the media entities: %d\n", ret);
		return ret;
	}

	ret = media_device_register(&mc->mdev);
	if (ret) {
		v4l2_err(&dev->v4l2_dev,
			 "failed to register the media device: %d\n", ret);
		goto err_unregister_graph;
	}
	v4l2_info(&dev->v4l2_dev, "registered media device %s\n",
		  dev_name(&mc->mdev.devnode->dev));
	return 0;

err_unregister_graph:
	v4l2_m2m_unregister_media_controller(m2m->m2m_dev);
	return ret;
}

static void daedalus_mc_unpublish(struct daedalus_dev *dev)
{
	media_device_unregister(&daedalus_dev_mc(dev)->mdev);
	v4l2_m2m_unregister_media_controller(daedalus_dev_m2m(dev)->m2m_dev);
}

/* Runs once the last file of the node is closed (daedalus_v4l2_release()). */
static void daedalus_mc_exit(struct daedalus_dev *dev)
{
	struct daedalus_mc *mc = daedalus_dev_mc(dev);

	dev->v4l2_dev.mdev = NULL;
	media_device_cleanup(&mc->mdev);
	daedalus_layer_set_priv(dev, &daedalus_mc_layer, NULL);
	kfree(mc);
}

const struct daedalus_layer daedalus_mc_layer = {
	.name		= "8.7-mc",
	.init		= daedalus_mc_init,
	.publish	= daedalus_mc_publish,
	.unpublish	= daedalus_mc_unpublish,
	.exit		= daedalus_mc_exit,
};
