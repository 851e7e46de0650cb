/**
 * The builder's backing image: the `backing` file and `backing.cfg` the
 * backing-image-manager leaves in `<root>/backing-images/<bi>-<uuid>/`,
 * plus its virtual content for the builder's model.
 *
 * raw: written byte-exact at the scenario's offsets into a truncated file,
 * so everything not written is a real hole. qcow2: the same raw content
 * converted by `qemu-img convert` (with `-c` for compress), then the
 * `zeroWrites` applied with `qemu-io write -z`. A zero write over a cluster
 * that holds data leaves a zero cluster that keeps its host cluster; over an
 * unallocated cluster, a zero cluster with no host offset (compat 1.1). Both
 * must read as zeros (libqcow gets both wrong, see longhorn-format.md §3).
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DataSpec } from './pattern';
import { patternBytes } from './pattern';

export interface BackingSpec {
  format: 'raw' | 'qcow2';
  /** Virtual size: a multiple of 512, at most the volume size. */
  size: number;
  writes: { offset: number; length: number; data: DataSpec }[];
  qcow2?: {
    clusterSize?: number;
    compress?: boolean;
    compat?: '0.10' | '1.1';
    /** Applied after `writes`, with qemu-io `write -z`. */
    zeroWrites?: { offset: number; length: number }[];
  };
}

export interface BackingImage {
  /** Absolute path of the `backing` file. */
  path: string;
  /** What the image reads as (length = virtual size). */
  content: Buffer;
}

/** 8 characters, like the manager's backing image UUIDs. */
const BI_UUID = '1f2e3d4c';

export function writeBackingImage(root: string, volumeName: string, spec: BackingSpec, scratchDir: string): BackingImage {
  if (spec.size <= 0 || spec.size % 512 !== 0) throw new Error(`backing size ${spec.size} is not a positive multiple of 512`);
  if (spec.format === 'raw' && spec.qcow2) throw new Error('qcow2 options given for a raw backing image');
  const dir = path.resolve(root, 'backing-images', `bi-${volumeName}-${BI_UUID}`);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'backing');
  const content = Buffer.alloc(spec.size);

  const rawPath = spec.format === 'raw' ? file : path.join(scratchDir, `backing-${volumeName}.raw`);
  const fd = fs.openSync(rawPath, 'w');
  try {
    fs.ftruncateSync(fd, spec.size);
    for (const w of spec.writes) {
      if (w.offset < 0 || w.length <= 0 || w.offset + w.length > spec.size) {
        throw new Error(`backing write ${w.offset}+${w.length} is outside the ${spec.size}-byte image`);
      }
      const bytes = patternBytes(w.data, w.length);
      bytes.copy(content, w.offset);
      fs.writeSync(fd, bytes, 0, bytes.length, w.offset);
    }
  } finally {
    fs.closeSync(fd);
  }

  if (spec.format === 'qcow2') {
    const q = spec.qcow2 ?? {};
    const opts = `cluster_size=${q.clusterSize ?? 65536},compat=${q.compat ?? '1.1'}`;
    execFileSync('qemu-img', ['convert', '-q', ...(q.compress ? ['-c'] : []), '-f', 'raw', '-O', 'qcow2', '-o', opts, rawPath, file]);
    fs.rmSync(rawPath);
    const zeros = q.zeroWrites ?? [];
    for (const z of zeros) {
      if (z.offset < 0 || z.length <= 0 || z.offset + z.length > spec.size) {
        throw new Error(`backing zero write ${z.offset}+${z.length} is outside the ${spec.size}-byte image`);
      }
      content.fill(0, z.offset, z.offset + z.length);
    }
    if (zeros.length > 0) {
      const cmds = zeros.flatMap((z) => ['-c', `write -z ${z.offset} ${z.length}`]);
      execFileSync('qemu-io', ['-f', 'qcow2', ...cmds, file], { stdio: 'pipe' });
    }
  }
  writeBackingCfg(file, spec.format === 'qcow2' ? spec.size : fs.statSync(file).size);
  return { path: file, content };
}

/**
 * `backing.cfg` as the backing-image-manager writes it (json.Marshal, no
 * trailing newline). `name` is the path inside the BIM container (disk at
 * /data/), `modificationTime` is Go's Time.UTC().String() of the mtime.
 */
function writeBackingCfg(file: string, virtualSize: number): void {
  const st = fs.statSync(file, { bigint: true });
  const sha512 = crypto.createHash('sha512').update(fs.readFileSync(file)).digest('hex');
  const name = `/data/backing-images/${path.basename(path.dirname(file))}/backing`;
  const cfg =
    `{"name":${JSON.stringify(name)},"uuid":"${BI_UUID}","size":${st.size},"virtualSize":${virtualSize},` +
    `"realSize":${st.blocks * 512n},"expectedChecksum":"","currentChecksum":"${sha512}",` +
    `"modificationTime":"${goTimeString(st.mtimeNs)}"}`;
  fs.writeFileSync(`${file}.cfg`, cfg);
}

/** Go's time.Time.String() in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`, trailing zeros of the fraction dropped. */
function goTimeString(ns: bigint): string {
  const secs = ns / 1_000_000_000n;
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  const iso = new Date(Number(secs) * 1000).toISOString(); // 2006-01-02T15:04:05.000Z
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}${frac ? `.${frac}` : ''} +0000 UTC`;
}
