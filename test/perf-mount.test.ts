/**
 * The mount daemon's fast paths, for behaviour only (never timing): 1 MiB
 * requests spliced from the layer files' page cache (data, zeros past a
 * layer's end, holes, runs of several layers in one request, unaligned
 * O_DIRECT reads) give the exact bytes, and the log counts spliced reads;
 * SIGTERM with no file open ends the daemon promptly (the bound is a guard
 * against a hang, not a speed target).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { processesMentioning } from './helpers/broken-replicas';
import { daemonPid, isMounted, mountReplica, unmount, unmountAll } from './helpers/mount';
import { buildReplica, type Scenario } from './helpers/replica-builder';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Data, zeros and holes interleaved below and across 1 MiB boundaries, in three layers. */
const scenario: Scenario = {
  name: 'perf',
  size: 16 * MiB,
  ops: [
    { op: 'write', offset: 0, length: 3 * MiB, data: { kind: 'seed', seed: 1 } },
    { op: 'write', offset: 5 * MiB + 4 * KiB, length: 2 * MiB, data: { kind: 'seed', seed: 2 } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 512 * KiB, length: 36 * KiB, data: { kind: 'seed', seed: 3 } },
    { op: 'write', offset: MiB - 4 * KiB, length: 8 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 6 * MiB, length: 1 * MiB + 64 * KiB, data: { kind: 'seed', seed: 4 } },
    { op: 'snapshot', name: 's2' },
    ...Array.from({ length: 40 }, (_, i) => ({
      op: 'write' as const, offset: 9 * MiB + i * 12 * KiB, length: 4 * KiB, data: { kind: 'seed' as const, seed: 10 + i },
    })),
    { op: 'write', offset: 15 * MiB, length: 1 * MiB, data: { kind: 'seed', seed: 5 } },
  ],
};

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-perf-'));
afterEach(() => unmountAll());
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `length` bytes at `offset` with O_DIRECT (the kernel passes the request through as it is). */
function readDirect(file: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
  try {
    const b = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, b, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return b.subarray(0, done);
  } finally {
    fs.closeSync(fd);
  }
}

describe('1 MiB requests, spliced', () => {
  it('every view read with dd bs=1M, twice (cold, then from the page cache), and unaligned O_DIRECT reads are exact', () => {
    const r = buildReplica(scenario, tmp);
    const mp = path.join(tmp, 'mnt-read');
    const log = path.join(tmp, 'read.log');
    mountReplica(r.dir, mp, ['--log', log]);
    const views: [string, string][] = [['volume.img', r.model.head], ['snapshots/s1.img', 'volume-snap-s1.img'],
      ['snapshots/s2.img', 'volume-snap-s2.img']];
    for (const [file, name] of views) {
      const want = r.model.view(name);
      for (let pass = 0; pass < 2; pass++) {
        const out = spawnSync('dd', [`if=${path.join(mp, file)}`, 'bs=1M', 'status=none'], { maxBuffer: 64 * MiB });
        expect(out.status).toBe(0);
        expect(Buffer.compare(out.stdout, want), `${file} pass ${pass}`).toBe(0);
      }
      for (const [off, len] of [[1000, 300_000], [MiB - 4 * KiB + 1, MiB], [9 * MiB + 100, 500 * KiB], [15 * MiB + 7, MiB]]) {
        expect(Buffer.compare(readDirect(path.join(mp, file), off, len), want.subarray(off, off + len)), `${file} at ${off}`).toBe(0);
      }
    }
    unmount(mp);
    const counts = /reads: (\d+) served in C from published runs, (\d+) through JS; \d+ of these read in C once resolved, (\d+) spliced/
      .exec(fs.readFileSync(log, 'utf8'));
    expect(counts).not.toBeNull();
    expect(Number(counts![3])).toBeGreaterThan(0);
  });
});

describe('SIGTERM', () => {
  it('with no file open: the mount is gone and the daemon has exited within a few seconds (a guard against hangs)', async () => {
    const r = buildReplica(scenario, tmp);
    const mp = path.join(tmp, 'mnt-term');
    mountReplica(r.dir, mp);
    expect(readDirect(path.join(mp, 'volume.img'), 0, 4096)).toEqual(r.model.view(r.model.head).subarray(0, 4096));
    const pid = daemonPid(mp);
    process.kill(pid, 'SIGTERM');
    const until = Date.now() + 3000;
    while (Date.now() < until && (isMounted(mp) || processesMentioning(mp).length > 0)) await sleep(20);
    expect(isMounted(mp)).toBe(false);
    expect(processesMentioning(mp)).toEqual([]);
  });
});
