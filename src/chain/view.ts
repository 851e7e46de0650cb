/**
 * Views of a replica: the head or any snapshot, each a Chain over the layer
 * files of its own chain plus the backing image. Layer files are opened once
 * per replica and shared by every view that uses them.
 */
import * as fs from 'node:fs';
import type { Layer } from '../layer/layer';
import { openImage, type ImageFormat } from '../layer/open-image';
import { SparseFileLayer } from '../layer/sparse-file';
import { openRegularReadOnly } from '../source/replica/files';
import type { Disk, Replica } from '../source/replica/replica';
import { Chain, type ChainOptions } from './chain';

export interface View {
  /** The view root's disk (the head, or the snapshot). */
  root: Disk;
  /** Chain members, newest first (not including the backing image). */
  disks: Disk[];
  chain: Chain;
  size: number;
}

export interface BackingImage {
  path: string;
  format: ImageFormat;
  layer: Layer;
}

/** Opens layer files lazily and keeps them for the life of the replica's views. */
export class LayerSet {
  readonly replica: Replica;
  private readonly files = new Map<string, SparseFileLayer>();
  private backingImage: BackingImage | null | undefined;
  readonly warnings: string[] = [];

  constructor(replica: Replica) {
    this.replica = replica;
  }

  disk(d: Disk): SparseFileLayer {
    let l = this.files.get(d.file);
    if (!l) {
      const fd = openRegularReadOnly(d.path, 'disk file');
      l = new SparseFileLayer(fd, d.path, d.file, fs.fstatSync(fd));
      this.files.set(d.file, l);
    }
    return l;
  }

  backing(): BackingImage | null {
    if (this.backingImage === undefined) {
      const loc = this.replica.backing;
      if (!loc) {
        this.backingImage = null;
      } else {
        const img = openImage(loc.path);
        this.warnings.push(...img.warnings);
        this.backingImage = { path: loc.path, format: img.format, layer: img.layer };
      }
    }
    return this.backingImage;
  }

  /** The view of the head (snapshot undefined) or of a snapshot (name or file name). */
  view(snapshot?: string, opts: ChainOptions = {}): View {
    const root = this.replica.viewRoot(snapshot);
    const disks = this.replica.chain(root.file);
    const layers: Layer[] = disks.map((d) => this.disk(d));
    const bi = this.backing();
    if (bi) layers.push(bi.layer);
    const size = root.kind === 'head' ? this.replica.meta.size : root.stat!.size;
    return { root, disks, size, chain: new Chain(layers, size, opts) };
  }

  close(): void {
    for (const l of this.files.values()) l.close();
    this.files.clear();
    this.backingImage?.layer.close();
    this.backingImage = undefined;
  }
}
