/**
 * The scale workload: a 2 TiB volume whose chain is as long as Longhorn
 * allows (250 files, the head included), each a sparse file with a few
 * small extents. It measures what opening and mounting cost when nothing
 * is read: metadata, chain building, memory. Cached like the main workload.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeDiskMeta, encodeVolumeMeta, writeMetaFile } from '../test/helpers/replica-meta';
import { type Extent, BLOCK, overlaps, scatteredExtents } from './plan';
import { remove } from './proc';
import { Prng, extentBytes } from './random';

const GENERATOR = 1;
export const SCALE_SIZE = 2 * 1024 ** 4;
export const SCALE_LAYERS = 250;
const EXTENTS_PER_LAYER = 3;
const CREATED = '2024-05-01T10:00:00Z';

export interface ScaleLayer {
  file: string;
  stream: number;
  extents: Extent[];
}

export interface ScaleWorkload {
  dir: string;
  replica: string;
  size: number;
  /** Oldest first; the last is the head. */
  layers: ScaleLayer[];
  seed: number;
}

function planScale(root: string, seed: number): ScaleWorkload {
  const dir = path.join(root, `scale-${seed}`);
  const layers: ScaleLayer[] = [];
  for (let i = 0; i < SCALE_LAYERS; i++) {
    const isHead = i === SCALE_LAYERS - 1;
    const file = isHead ? `volume-head-${String(i).padStart(3, '0')}.img` : `volume-snap-s${String(i + 1).padStart(3, '0')}.img`;
    const rng = new Prng(seed, `scale:${file}`);
    const extents = scatteredExtents(SCALE_SIZE, Infinity, BLOCK, 256 * 1024, 0, rng, EXTENTS_PER_LAYER);
    layers.push({ file, stream: 1000 + i, extents });
  }
  return { dir, replica: path.join(dir, 'longhorn', 'replicas', 'scale-abcd1234'), size: SCALE_SIZE, layers, seed };
}

function stampOf(s: ScaleWorkload): string {
  return `${JSON.stringify({ generator: GENERATOR, size: s.size, layers: s.layers.length, seed: s.seed })}\n`;
}

export function ensureScaleWorkload(root: string, seed: number, log: (m: string) => void): { scale: ScaleWorkload; cached: boolean } {
  const s = planScale(root, seed);
  const stamp = path.join(s.dir, 'stamp.json');
  try {
    if (fs.readFileSync(stamp, 'utf8') === stampOf(s)) return { scale: s, cached: true };
  } catch {
    // not generated yet
  }
  log(`generating the scale workload (${SCALE_LAYERS} layers of 2 TiB) in ${s.dir}`);
  remove(s.dir);
  fs.mkdirSync(s.replica, { recursive: true });
  let parent = '';
  s.layers.forEach((l, i) => {
    const isHead = i === s.layers.length - 1;
    const fd = fs.openSync(path.join(s.replica, l.file), 'w', 0o644);
    try {
      fs.ftruncateSync(fd, s.size);
      for (const e of l.extents) fs.writeSync(fd, extentBytes(seed, l.stream, e.index, e.length), 0, e.length, e.offset);
    } finally {
      fs.closeSync(fd);
    }
    writeMetaFile(path.join(s.replica, `${l.file}.meta`), encodeDiskMeta({
      Name: isHead ? l.file : `volume-head-${String(i).padStart(3, '0')}.img`,
      Parent: parent, Removed: false, UserCreated: !isHead, Created: CREATED, Labels: isHead ? null : {},
    }));
    parent = l.file;
  });
  writeMetaFile(path.join(s.replica, 'volume.meta'), encodeVolumeMeta({
    Size: s.size, Head: s.layers[s.layers.length - 1].file, Dirty: false, Rebuilding: false, Error: '',
    Parent: s.layers[s.layers.length - 2].file, SectorSize: 512, BackingFilePath: '',
  }));
  fs.writeFileSync(stamp, stampOf(s));
  return { scale: s, cached: false };
}

/**
 * Extents whose bytes the view must show: those of the newest and the
 * oldest layers that no newer layer covers. Used to check a mount reads
 * the right layer before its numbers are reported.
 */
export function visibleSamples(s: ScaleWorkload): { offset: number; bytes: Buffer }[] {
  const out: { offset: number; bytes: Buffer }[] = [];
  for (const i of [s.layers.length - 1, s.layers.length - 2, 0]) {
    const l = s.layers[i];
    for (const e of l.extents) {
      const hidden = s.layers.slice(i + 1).some((n) => overlaps(n.extents, e.offset, e.length));
      if (!hidden) out.push({ offset: e.offset, bytes: extentBytes(s.seed, l.stream, e.index, e.length) });
    }
  }
  return out;
}
