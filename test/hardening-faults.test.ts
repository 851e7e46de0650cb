/**
 * Faults while mounted: a layer file cut short, replaced, or written to
 * under the daemon. Readers of the affected views get EIO (never torn or
 * zero-filled data), readers of other views keep being served, and the log
 * says what happened. SIGINT unmounts cleanly (SIGTERM and kill -9 are in
 * mount.test.ts).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { processesMentioning, readAt } from './helpers/broken-replicas';
import { daemonPid, isMounted, mountReplica, unmount, unmountAll } from './helpers/mount';
import { buildReplica, type BuiltReplica, type Scenario } from './helpers/replica-builder';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * head <- s3 <- s1, and s2 (also on s1) left off the head's chain by a
 * revert. s3 holds data in both 4 MiB regions (2 MiB + 128 KiB, 6 MiB + 128 KiB).
 */
const scenario: Scenario = {
  name: 'faults',
  size: 8 * MiB,
  ops: [
    { op: 'write', offset: 0, length: 64 * KiB, data: { kind: 'seed', seed: 1 } },
    { op: 'write', offset: 2 * MiB, length: 64 * KiB, data: { kind: 'seed', seed: 2 } },
    { op: 'write', offset: 6 * MiB, length: 64 * KiB, data: { kind: 'seed', seed: 3 } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 2 * MiB + 64 * KiB, length: 64 * KiB, data: { kind: 'seed', seed: 4 } },
    { op: 'snapshot', name: 's2' },
    { op: 'revert', name: 's1' },
    { op: 'write', offset: 2 * MiB + 128 * KiB, length: 64 * KiB, data: { kind: 'seed', seed: 5 } },
    { op: 'write', offset: 6 * MiB + 128 * KiB, length: 64 * KiB, data: { kind: 'seed', seed: 6 } },
    { op: 'snapshot', name: 's3' },
    { op: 'write', offset: 7 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 7 } },
  ],
};

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-faults-'));
afterEach(() => unmountAll());
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns true or `ms` pass (the daemon's watch ticks once a second). */
async function eventually(fn: () => boolean, ms = 4000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (fn()) return true;
    await sleep(100);
  }
  return fn();
}

interface Mounted {
  r: BuiltReplica;
  mp: string;
  log: string;
  view(name?: string): string;
  expected(name: string | undefined, offset: number, length: number): Buffer;
}

function setup(name: string): Mounted {
  const r = buildReplica(scenario, tmp);
  const mp = path.join(tmp, `mnt-${name}`);
  const log = path.join(tmp, `${name}.log`);
  mountReplica(r.dir, mp, ['--log', log]);
  return {
    r, mp, log,
    view: (snap) => path.join(mp, snap ? `snapshots/${snap}.img` : 'volume.img'),
    expected: (snap, offset, length) =>
      r.model.view(snap ? `volume-snap-${snap}.img` : r.model.head).subarray(offset, offset + length),
  };
}

describe('faults while mounted', () => {
  it('a layer cut short: its views fail with EIO at once and after, the other views are served, the log says why', async () => {
    const m = setup('cut');
    // Open the views (and resolve region 0 of the head's view) before the damage.
    expect(readAt(m.view(), 0, 4096)).toEqual(m.expected(undefined, 0, 4096));
    expect(readAt(m.view('s1'), 0, 4096)).toEqual(m.expected('s1', 0, 4096));
    expect(readAt(m.view('s2'), 0, 4096)).toEqual(m.expected('s2', 0, 4096));

    fs.truncateSync(path.join(m.r.dir, 'volume-snap-s3.img'), 1 * MiB);
    // At once, before the watch has looked: a resolved run of s3 (region 0) and an unresolved region.
    expect(readAt(m.view(), 2 * MiB + 128 * KiB, 4096)).toBe('EIO');
    expect(readAt(m.view(), 6 * MiB + 128 * KiB, 4096)).toBe('EIO');

    // After the watch: the whole view is stale, and so is s3's own view.
    expect(await eventually(() => /volume\.img: volume-snap-s3\.img size changed/.test(fs.readFileSync(m.log, 'utf8')))).toBe(true);
    expect(readAt(m.view(), 0, 4096)).toBe('EIO');
    expect(readAt(m.view('s3'), 0, 4096)).toBe('EIO');
    // s1 and s2 do not use s3: still served, byte for byte.
    expect(readAt(m.view('s1'), 2 * MiB, 64 * KiB)).toEqual(m.expected('s1', 2 * MiB, 64 * KiB));
    expect(readAt(m.view('s2'), 2 * MiB, 192 * KiB)).toEqual(m.expected('s2', 2 * MiB, 192 * KiB));
    expect(readAt(m.view('s2'), 6 * MiB, 64 * KiB)).toEqual(m.expected('s2', 6 * MiB, 64 * KiB));
    expect(fs.readFileSync(m.log, 'utf8')).toMatch(/error: .*volume-snap-s3\.img.*EIO/);
    unmount(m.mp);
  });

  it('a layer replaced by a FIFO before its view is opened: open fails with EIO at once, the rest is served', async () => {
    const m = setup('fifo');
    const s2 = path.join(m.r.dir, 'volume-snap-s2.img');
    fs.rmSync(s2);
    execFileSync('mkfifo', [s2]);
    const t = Date.now();
    expect(readAt(m.view('s2'), 0, 4096)).toBe('EIO');
    expect(Date.now() - t).toBeLessThan(2000);
    expect(readAt(m.view(), 6 * MiB, 256 * KiB)).toEqual(m.expected(undefined, 6 * MiB, 256 * KiB));
    expect(readAt(m.view('s1'), 0, 64 * KiB)).toEqual(m.expected('s1', 0, 64 * KiB));
    expect(fs.readFileSync(m.log, 'utf8')).toMatch(/error: \/snapshots\/s2\.img: cannot open view: .*volume-snap-s2\.img.*FIFO/);
    unmount(m.mp);
  });

  it('the head written to while mounted (a live engine): its view fails with EIO, snapshots are served', async () => {
    const m = setup('live');
    expect(readAt(m.view(), 0, 4096)).toEqual(m.expected(undefined, 0, 4096));
    const fd = fs.openSync(path.join(m.r.dir, m.r.model.head), 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 0x77), 0, 4096, 3 * MiB);
    fs.closeSync(fd);
    expect(await eventually(() => /volume\.img: volume-head-\d+\.img modified \(mtime changed\) while mounted/.test(fs.readFileSync(m.log, 'utf8')))).toBe(true);
    expect(readAt(m.view(), 3 * MiB, 4096)).toBe('EIO');
    expect(readAt(m.view(), 0, 4096)).toBe('EIO');
    expect(readAt(m.view('s3'), 6 * MiB, 256 * KiB)).toEqual(m.expected('s3', 6 * MiB, 256 * KiB));
    unmount(m.mp);
  });

  it('a layer that starts failing reads with EIO (a dying disk): readers of its views get EIO, the others are served, the log says why', async () => {
    // The failing disk is another chainfs mount: B's layer s3 is bind-mounted
    // from A's view of s3, and cutting A's s3 short makes A answer EIO, so
    // B's pread of its layer fails in the kernel like a bad sector.
    const a = setup('disk-a');
    const b = buildReplica(scenario, tmp);
    const layer = path.join(b.dir, 'volume-snap-s3.img');
    execFileSync('mount', ['--bind', a.view('s3'), layer]);
    try {
      const mpB = path.join(tmp, 'mnt-disk-b');
      const logB = path.join(tmp, 'disk-b.log');
      mountReplica(b.dir, mpB, ['--log', logB]);
      const viewB = (snap?: string) => path.join(mpB, snap ? `snapshots/${snap}.img` : 'volume.img');
      expect(readAt(viewB('s3'), 0, 4096)).toBeInstanceOf(Buffer);
      expect(readAt(viewB('s1'), 0, 4096)).toEqual(a.expected('s1', 0, 4096));

      fs.truncateSync(path.join(a.r.dir, 'volume-snap-s3.img'), 1 * MiB);
      expect(readAt(viewB(), 6 * MiB + 128 * KiB, 4096)).toBe('EIO');
      expect(readAt(viewB('s3'), 2 * MiB + 128 * KiB, 4096)).toBe('EIO');
      // Views without s3 are served, byte for byte; the daemon is alive.
      expect(readAt(viewB('s1'), 6 * MiB, 64 * KiB)).toEqual(a.expected('s1', 6 * MiB, 64 * KiB));
      expect(readAt(viewB('s2'), 2 * MiB, 128 * KiB)).toEqual(a.expected('s2', 2 * MiB, 128 * KiB));
      expect(fs.readFileSync(logB, 'utf8')).toMatch(/error: .*volume-snap-s3\.img: read at offset \d+ failed: EIO/);
      unmount(mpB);
    } finally {
      execFileSync('umount', ['-l', layer]);
    }
    unmount(a.mp);
  });

  it('SIGINT unmounts cleanly: no mount, no daemon, no pid record', async () => {
    const m = setup('sigint');
    const pid = daemonPid(m.mp);
    const record = `/run/chainfs/${encodeURIComponent(m.mp)}.json`;
    expect(fs.existsSync(record)).toBe(true);
    process.kill(pid, 'SIGINT');
    expect(await eventually(() => !isMounted(m.mp) && processesMentioning(m.mp).length === 0)).toBe(true);
    expect(fs.existsSync(record)).toBe(false);
    expect(fs.readFileSync(m.log, 'utf8')).toMatch(/SIGINT: unmounting/);
  });
});
