/**
 * One v2 disk, opened: the device, its lvstore model, and the lvol layers
 * (opened once, shared by every view whose chain uses them).
 */
import * as fs from 'node:fs';
import { LvolLayer } from '../../layer/lvol';
import { readBlobstore } from './blobstore';
import { deviceInUse, openDevice, type Device } from './device';
import { buildLvstore, type Lvol, type Lvstore } from './lvstore';
import { ChainfsError } from '../../errors';

export class Disk {
  readonly dev: Device;
  readonly lvs: Lvstore;
  private readonly layers = new Map<number, LvolLayer>();

  private constructor(dev: Device, lvs: Lvstore) {
    this.dev = dev;
    this.lvs = lvs;
  }

  /**
   * Opens `file` read-only and reads its metadata. A block device that looks
   * in use is refused unless `force` (then `warn`ed). Throws ChainfsError.
   */
  static open(file: string, force: boolean, warn: (m: string) => void): Disk {
    const dev = openDevice(file);
    try {
      if (dev.isBlockDevice) {
        const busy = deviceInUse(dev);
        if (busy && !force) throw new ChainfsError(file, `block device looks in use: ${busy}; detach it from SPDK (or copy it with dd conv=sparse) first, or give --force`);
        if (busy) warn(`${file}: block device looks in use (${busy}); reading it anyway (--force): metadata may be torn`);
      }
      const bs = readBlobstore(dev.fd, file, dev.size, !dev.isBlockDevice);
      const lvs = buildLvstore(bs);
      if (bs.sb.clean !== 1 && dev.isBlockDevice) warn(`${file}: the lvstore was not unloaded cleanly (clean = 0): if SPDK still runs on it, what is read may be torn`);
      return new Disk(dev, lvs);
    } catch (e) {
      fs.closeSync(dev.fd);
      throw e;
    }
  }

  /** The lvol's layer (opened on first use). */
  layer(l: Lvol): LvolLayer {
    let layer = this.layers.get(l.id);
    if (!layer) {
      layer = new LvolLayer(this.dev.fd, this.dev.path, l.name, {
        clusterSize: this.lvs.bs.sb.clusterSize, clusters: l.blob.clusters, deviceSize: this.dev.size,
        changed: () => this.changed(),
      });
      this.layers.set(l.id, layer);
    }
    return layer;
  }

  /** Why the image no longer looks as at open (a file's size or mtime moved), or undefined. */
  changed(): string | undefined {
    if (this.dev.isBlockDevice) return undefined;
    try {
      const st = fs.fstatSync(this.dev.fd);
      if (st.size !== this.dev.stat.size) return `size changed from ${this.dev.stat.size} to ${st.size}`;
      if (st.mtimeMs !== this.dev.stat.mtimeMs) return 'modified (mtime changed)';
    } catch (e) {
      return `cannot stat: ${(e as Error).message}`;
    }
    return undefined;
  }

  close(): void {
    this.layers.clear();
    fs.closeSync(this.dev.fd);
  }
}
