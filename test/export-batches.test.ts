/**
 * The kernel-copy write path of `chainfs export` (clusters checked for
 * zeros through a mapping of the layer files, copied file to file with
 * pwrite from that mapping on the thread pool, or copy_file_range where a
 * file cannot be mapped) against qemu's
 * flattening of the same history. The chain's data runs straddle the
 * writers' 8 MiB batch boundaries, a cluster holds 4 KiB blocks of several
 * layers and holes, some clusters are allocated zeros (in part or whole),
 * and the raw backing image ends inside a cluster and inside a batch. Every
 * view goes out raw, raw with --checksum, and qcow2 with 512-byte, 64 KiB
 * and 2 MiB clusters; an output on another file system (tmpfs: the kernel
 * cannot copy there, the same ranges go through a buffer) must be the same.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../src/native';
import { chainfsOk } from './helpers/cli';
import { buildOracle, type Oracle } from './helpers/oracle';
import { qemuImg } from './helpers/qemu';
import { buildReplica, type BuiltReplica, type BuiltView, type Scenario } from './helpers/replica-builder';

const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));
afterEach(breathe);

const KiB = 1024;
const MiB = 1024 * KiB;
const BATCH = 8 * MiB;
const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');

/** 40 MiB: runs across the 8, 16, 24 and 32 MiB batch boundaries, from several layers. */
const straddle: Scenario = {
  name: 'straddle',
  size: 40 * MiB,
  backing: {
    format: 'raw',
    size: 20 * MiB + 512, // ends 512 bytes into a cluster, in the middle of the third batch
    writes: [
      { offset: BATCH - 3 * MiB, length: 6 * MiB, data: { kind: 'seed', seed: 301 } }, // across 8 MiB
      { offset: 20 * MiB - 60 * KiB, length: 60 * KiB + 512, data: { kind: 'seed', seed: 302 } }, // to its end
      { offset: 12 * MiB, length: 256 * KiB, data: { kind: 'zero' } },
    ],
  },
  ops: [
    { op: 'write', offset: 2 * BATCH - 4 * KiB, length: 8 * KiB, data: { kind: 'seed', seed: 311 } }, // 4 KiB each side of 16 MiB
    { op: 'write', offset: BATCH - 12 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 312 } },
    { op: 'write', offset: 3 * BATCH - 1 * MiB, length: 9 * MiB + 4 * KiB, data: { kind: 'seed', seed: 313 } }, // across 24 and 32 MiB
    { op: 'write', offset: 30 * MiB, length: 64 * KiB, data: { kind: 'zero' } }, // a whole cluster of allocated zeros
    { op: 'snapshot', name: 's1' },
    // One 64 KiB cluster at 8 MiB - 64 KiB: blocks of the head, s1 (above), the backing image and its zeros.
    { op: 'write', offset: BATCH - 8 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 321 } },
    { op: 'write', offset: BATCH - 64 * KiB, length: 4 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 2 * BATCH - 2 * MiB, length: 4 * MiB, data: { kind: 'zero' } }, // zeros across 16 MiB, over s1's data
    { op: 'write', offset: 2 * BATCH + 100, length: 50, data: { kind: 'seed', seed: 322 } }, // non-zero again inside those zeros
    { op: 'write', offset: 40 * MiB - 4 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 323 } }, // the last block
    { op: 'snapshot', name: 's2' },
    { op: 'write', offset: 4 * BATCH - 32 * KiB, length: 64 * KiB, data: { kind: 'byte', value: 0x7e } }, // across 32 MiB, half a cluster each side
    { op: 'write', offset: 3 * BATCH, length: 4 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 20 * MiB, length: 8 * KiB, data: { kind: 'seed', seed: 331 } }, // right after the backing image's end
  ],
};

const snapArgs = (v: BuiltView) => (v.snapshot !== undefined ? ['--snapshot', v.snapshot] : []);
const label = (v: BuiltView) => (v.snapshot !== undefined ? `snapshot ${v.snapshot}` : 'head');

let tmp: string;
let built: BuiltReplica;
let oracle: Oracle;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-batches-'));
  built = buildReplica(straddle, tmp);
  oracle = buildOracle(straddle, tmp);
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** qemu-img check is clean and compare says the image is the view's bytes. */
function sameAsOracle(file: string, v: BuiltView, format: 'raw' | 'qcow2'): void {
  if (format === 'qcow2') qemuImg(['check', '-q', '-f', 'qcow2', file]);
  qemuImg(['compare', '-q', '-f', format, '-F', 'raw', file, oracle.views.get(v.file)!]);
}

describe('export across batch boundaries', () => {
  it('has data runs that straddle every batch boundary (the scenario tests what it claims)', () => {
    const head = fs.readFileSync(oracle.views.get(built.views[0].file)!);
    for (const b of [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH]) {
      const before = head.subarray(b - 4 * KiB, b);
      const after = head.subarray(b, b + 4 * KiB);
      expect(before.some((x) => x !== 0) || after.some((x) => x !== 0), `around ${b / MiB} MiB`).toBe(true);
    }
  });

  it('raw, raw --checksum and qcow2 (512 B, 64 KiB, 2 MiB clusters) of every view equal qemu\'s flattening', async () => {
    const out = fs.mkdtempSync(path.join(tmp, 'out-'));
    for (const v of built.views) {
      const expected = fs.readFileSync(oracle.views.get(v.file)!);
      const raw = path.join(out, `${v.file}.raw`);
      chainfsOk(['export', built.dir, raw, ...snapArgs(v), '--quiet']);
      expect(fs.readFileSync(raw).equals(expected), `${label(v)}: raw`).toBe(true);
      fs.rmSync(raw);
      const printed = chainfsOk(['export', built.dir, raw, ...snapArgs(v), '--checksum', '--quiet']).toString();
      expect(fs.readFileSync(raw).equals(expected), `${label(v)}: raw --checksum`).toBe(true);
      expect(printed).toBe(`${sha512(expected)}  ${raw}\n`);
      fs.rmSync(raw);
      for (const cs of ['512', '64k', '2M']) {
        const q = path.join(out, `${v.file}-${cs}.qcow2`);
        chainfsOk(['export', built.dir, q, ...snapArgs(v), '--format', 'qcow2', '--cluster-size', cs, '--quiet']);
        sameAsOracle(q, v, 'qcow2');
        fs.rmSync(q);
      }
      await breathe();
    }
  });

  it('stores no all-zero cluster: the 64 KiB qcow2 of the head maps only clusters holding a non-zero byte', () => {
    const head = built.views[0];
    const q = path.join(tmp, 'head-map.qcow2');
    chainfsOk(['export', built.dir, q, '--format', 'qcow2', '--quiet']);
    const expected = fs.readFileSync(oracle.views.get(head.file)!);
    const map: { start: number; length: number; data: boolean }[] = JSON.parse(qemuImg(['map', '--output=json', q]));
    const cs = 64 * KiB;
    for (let c = 0; c < expected.length / cs; c++) {
      const nonZero = expected.subarray(c * cs, (c + 1) * cs).some((x) => x !== 0);
      const stored = map.some((m) => m.data && m.start <= c * cs && c * cs < m.start + m.length);
      expect(stored, `cluster ${c} (${(c * cs) / KiB} KiB)`).toBe(nonZero);
    }
    fs.rmSync(q);
  });

  it('leaves every all-zero 4 KiB block of a raw export a hole and allocates every other one (allocated zeros of the layers too)', () => {
    const head = built.views[0];
    const raw = path.join(tmp, 'head-holes.raw');
    chainfsOk(['export', built.dir, raw, '--quiet']);
    const expected = fs.readFileSync(oracle.views.get(head.file)!);
    const fd = fs.openSync(raw, 'r');
    try {
      const block = 4 * KiB;
      let zeroBlocks = 0;
      for (let b = 0; b < expected.length / block; b++) {
        const nonZero = expected.subarray(b * block, (b + 1) * block).some((x) => x !== 0);
        if (!nonZero) zeroBlocks++;
        expect(native.seekData(fd, b * block) === b * block, `block ${b} (${(b * block) / KiB} KiB)`).toBe(nonZero);
      }
      expect(zeroBlocks).toBeGreaterThan(0);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(raw);
    }
  });

  it('writes the same images to another file system (tmpfs), where the kernel cannot copy file to file', async () => {
    const shm = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/chainfs-batches-') : undefined;
    expect(shm, '/dev/shm (tmpfs) is needed for this test').toBeDefined();
    try {
      const head = built.views[0];
      const raw = path.join(shm!, 'head.raw');
      chainfsOk(['export', built.dir, raw, '--quiet']);
      expect(fs.readFileSync(raw).equals(fs.readFileSync(oracle.views.get(head.file)!))).toBe(true);
      const q = path.join(shm!, 'head.qcow2');
      chainfsOk(['export', built.dir, q, '--format', 'qcow2', '--quiet']);
      sameAsOracle(q, head, 'qcow2');
    } finally {
      fs.rmSync(shm!, { recursive: true, force: true });
    }
  });
});
