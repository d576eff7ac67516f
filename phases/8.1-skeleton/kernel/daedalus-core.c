// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: module entry, platform device and the layer stack.
 *
 * Reading order: daedalus_init() registers a platform driver and a platform
 * device; daedalus_probe() allocates struct daedalus_dev and brings up every
 * layer (daedalus_layers_up()); daedalus_remove() takes them down again in
 * reverse order: unpublish at once, exit (freeing each layer's state) in
 * the v4l2_device release callback once the last user has gone, as the
 * kernel's m2m drivers do. The structure itself is freed there too.
 */
#include <linux/err.h>
#include <linux/module.h>
#include <linux/overflow.h>
#include <linux/platform_device.h>
#include <linux/slab.h>

#include "daedalus.h"

/* @layer's slot in dev->layer_priv[]: same index as in daedalus_layers[]. */
static void **daedalus_layer_slot(struct daedalus_dev *dev,
				  const struct daedalus_layer *layer)
{
	unsigned int i;

	for (i = 0; i < daedalus_nr_layers; i++)
		if (daedalus_layers[i] == layer)
			return &dev->layer_priv[i];
	WARN_ONCE(1, "layer %s is not in this module's layer table\n",
		  layer->name);
	return NULL;
}

/**
 * daedalus_layer_priv() - a layer's private state on @dev
 * @dev: the device.
 * @layer: the layer whose state is wanted (its struct daedalus_layer).
 *
 * Return: what @layer stored with daedalus_layer_set_priv(), or NULL (before
 * its @init, after its @exit). No lock: a layer writes its slot only in its
 * own @init and @exit, and nothing that reads it runs concurrently with
 * those (@init precedes every @publish, @exit follows the last user).
 * Called from any context.
 */
void *daedalus_layer_priv(struct daedalus_dev *dev,
			  const struct daedalus_layer *layer)
{
	void **slot = daedalus_layer_slot(dev, layer);

	return slot ? *slot : NULL;
}

/**
 * daedalus_layer_set_priv() - store a layer's private state on @dev
 * @dev: the device.
 * @layer: the calling layer.
 * @priv: its state; NULL clears the slot.
 *
 * Called by @layer itself from its @init and @exit only.
 */
void daedalus_layer_set_priv(struct daedalus_dev *dev,
			     const struct daedalus_layer *layer, void *priv)
{
	void **slot = daedalus_layer_slot(dev, layer);

	if (slot)
		*slot = priv;
}

static void daedalus_layers_unpublish(struct daedalus_dev *dev)
{
	const struct daedalus_layer *layer;

	while (dev->layers_published) {
		layer = daedalus_layers[--dev->layers_published];
		if (layer->unpublish)
			layer->unpublish(dev);
	}
}

static void daedalus_layers_exit(struct daedalus_dev *dev)
{
	const struct daedalus_layer *layer;

	while (dev->layers_inited) {
		layer = daedalus_layers[--dev->layers_inited];
		if (layer->exit)
			layer->exit(dev);
	}
}

static void daedalus_layers_down(struct daedalus_dev *dev)
{
	daedalus_layers_unpublish(dev);
	daedalus_layers_exit(dev);
}

static int daedalus_layers_up(struct daedalus_dev *dev)
{
	const struct daedalus_layer *layer;
	int ret;

	for (; dev->layers_inited < daedalus_nr_layers; dev->layers_inited++) {
		layer = daedalus_layers[dev->layers_inited];
		ret = layer->init ? layer->init(dev) : 0;
		if (ret) {
			dev_err(&dev->pdev->dev, "layer %s: init failed: %d\n",
				layer->name, ret);
			goto err_down;
		}
	}
	for (; dev->layers_published < daedalus_nr_layers;
	     dev->layers_published++) {
		layer = daedalus_layers[dev->layers_published];
		ret = layer->publish ? layer->publish(dev) : 0;
		if (ret) {
			dev_err(&dev->pdev->dev, "layer %s: publish failed: %d\n",
				layer->name, ret);
			goto err_down;
		}
	}
	return 0;

err_down:
	daedalus_layers_down(dev);
	return ret;
}

/*
 * The last user is gone (the device was removed and every file of the video
 * node and of later layers' devices is closed): only now do the layers free
 * their state, which open files may still use after an unbind.
 */
static void daedalus_v4l2_release(struct v4l2_device *v4l2_dev)
{
	struct daedalus_dev *dev =
		container_of(v4l2_dev, struct daedalus_dev, v4l2_dev);

	daedalus_layers_exit(dev);
	v4l2_device_unregister(&dev->v4l2_dev);
	mutex_destroy(&dev->vdev_lock);
	kfree(dev);
}

static int daedalus_probe(struct platform_device *pdev)
{
	struct daedalus_dev *dev;
	int ret;

	dev = kzalloc(struct_size(dev, layer_priv, daedalus_nr_layers),
		      GFP_KERNEL);
	if (!dev)
		return -ENOMEM;
	dev->pdev = pdev;
	mutex_init(&dev->vdev_lock);

	ret = v4l2_device_register(&pdev->dev, &dev->v4l2_dev);
	if (ret)
		goto err_free;
	dev->v4l2_dev.release = daedalus_v4l2_release;
	platform_set_drvdata(pdev, dev);

	ret = daedalus_layers_up(dev);
	if (ret)
		goto err_put;

	dev_info(&pdev->dev, "%u layer(s) up, top layer %s\n",
		 daedalus_nr_layers, daedalus_layers[daedalus_nr_layers - 1]->name);
	return 0;

err_put:
	/* Drops the last reference: daedalus_v4l2_release() frees dev. */
	v4l2_device_put(&dev->v4l2_dev);
	return ret;

err_free:
	mutex_destroy(&dev->vdev_lock);
	kfree(dev);
	return ret;
}

/*
 * Unbind: the nodes disappear now; open files keep the device (and the
 * layers' state) until they close, see daedalus_v4l2_release().
 */
static void daedalus_remove(struct platform_device *pdev)
{
	struct daedalus_dev *dev = platform_get_drvdata(pdev);

	daedalus_layers_unpublish(dev);
	v4l2_device_put(&dev->v4l2_dev);
}

/*
 * The platform device is the driver core's (allocated by it, freed by its
 * release), not this module's: references to it may outlive the module. A
 * DMA allocator's buffer holds one (get_device()) for as long as the buffer
 * lives, and a buffer exported as a dma-buf lives as long as any process
 * keeps that file, also after rmmod.
 */
static struct platform_device *daedalus_pdev;

static struct platform_driver daedalus_pdrv = {
	.probe		= daedalus_probe,
	DAEDALUS_PLATFORM_REMOVE(daedalus_remove),
	.driver		= {
		.name	= DAEDALUS_NAME,
	},
};

static int __init daedalus_init(void)
{
	int ret;

	ret = platform_driver_register(&daedalus_pdrv);
	if (ret)
		return ret;

	daedalus_pdev = platform_device_register_simple(DAEDALUS_NAME,
							PLATFORM_DEVID_NONE,
							NULL, 0);
	if (IS_ERR(daedalus_pdev)) {
		ret = PTR_ERR(daedalus_pdev);
		goto err_unregister_driver;
	}

	return 0;

err_unregister_driver:
	platform_driver_unregister(&daedalus_pdrv);
	return ret;
}

static void __exit daedalus_exit(void)
{
	platform_device_unregister(daedalus_pdev);
	platform_driver_unregister(&daedalus_pdrv);
}

module_init(daedalus_init);
module_exit(daedalus_exit);

MODULE_DESCRIPTION("V4L2 memory-to-memory video decoder backed by a userspace daemon");
MODULE_AUTHOR("daedalus-v4l2 developers");
MODULE_LICENSE("GPL");
