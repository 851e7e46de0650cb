/**
 * Slow I/O for one reader must not stall the others. The backing image sits
 * behind gatefs (test/helpers/gatefs.c), a passthrough FUSE file system
 * whose reads wait while a gate file is missing: with the gate closed, two
 * readers of backing-image data block (one whose region is not resolved
 * yet, which JS resolves and a libfuse thread then reads in C; one whose
 * region is published, which a libfuse thread reads in C), and meanwhile
 * other readers of the same mounted view must get their bytes, both from
 * published regions (C) and from a region read for the first time (resolved
 * by JS). Nothing here is timed: the gate decides who waits. A mount
 * interrupted (Ctrl-C) while its daemon still waits at the gate, opening
 * the replica, leaves no daemon to mount later; one slower than 30 s to
 * open is waited for, with a notice.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildReplica, type Scenario } from './helpers/replica-builder';
import { isMounted, mountReplica, unmount, unmountAll } from './helpers/mount';

const MiB = 1024 * 1024;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-slow-'));
const gateMp = path.join(tmp, 'gated');
const gate = path.join(tmp, 'gate');
let gatefs: ChildProcess | undefined;

// [0, 8 MiB): the backing image only (behind the gate); [8, 16 MiB): chain files only.
const scenario: Scenario = {
  name: 'slow-backing',
  size: 16 * MiB,
  backing: { format: 'raw', size: 8 * MiB, writes: [{ offset: 0, length: 8 * MiB, data: { kind: 'seed', seed: 71 } }] },
  ops: [
    { op: 'write', offset: 8 * MiB, length: 4 * MiB, data: { kind: 'seed', seed: 72 } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 12 * MiB, length: 4 * MiB, data: { kind: 'seed', seed: 73 } },
  ],
};

function waiting(): number {
  try {
    return Number(fs.readFileSync(`${gate}.waiting`, 'utf8'));
  } catch {
    return 0;
  }
}

async function until(what: string, ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000; // a hang guard, not a measurement
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  const bin = path.join(tmp, 'gatefs');
  const flags = execFileSync('pkg-config', ['--cflags', '--libs', 'fuse3'], { encoding: 'utf8' }).trim().split(/\s+/);
  execFileSync('gcc', ['-O2', '-Wall', '-o', bin, path.join(__dirname, 'helpers', 'gatefs.c'), ...flags]);
  const source = path.join(tmp, 'source');
  fs.mkdirSync(source);
  fs.mkdirSync(gateMp);
  fs.writeFileSync(gate, '');
  gatefs = spawn(bin, [gateMp, '-f', '-o', 'ro'], {
    env: { ...process.env, GATEFS_SOURCE: source, GATEFS_GATE: gate }, stdio: 'ignore',
  });
  await until('gatefs to mount', () => isMounted(gateMp));
});

afterAll(() => {
  fs.writeFileSync(gate, ''); // let every waiting read finish
  unmountAll();
  spawnSync('fusermount', ['-u', gateMp]);
  gatefs?.kill();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** `dd` of `count` 64 KiB blocks at `offset`, O_DIRECT: every block is a request to the daemon. */
function ddDirect(file: string, offset: number, count: number, out: string): ChildProcess {
  return spawn('dd', [`if=${file}`, `of=${out}`, 'iflag=direct', 'bs=64K', `skip=${offset / (64 * 1024)}`, `count=${count}`, 'status=none'],
    { stdio: 'ignore' });
}

function readDirect(file: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
  try {
    const b = Buffer.alloc(length);
    for (let done = 0; done < length;) done += fs.readSync(fd, b, done, Math.min(128 * 1024, length - done), offset + done);
    return b;
  } finally {
    fs.closeSync(fd);
  }
}

describe('a reader stuck on slow I/O does not stall the others', () => {
  it('while two reads of the backing image wait, reads of other regions (published or not) are served', async () => {
    const built = buildReplica(scenario, tmp);
    fs.copyFileSync(built.backingPath!, path.join(tmp, 'source', 'backing'));
    const head = built.views.find((v) => v.snapshot === undefined)!;
    const want = built.model.view(head.file);
    const mp = path.join(tmp, 'mnt');
    fs.mkdirSync(mp);
    mountReplica(built.dir, mp, ['--backing-file', path.join(gateMp, 'backing')]);
    try {
      const img = path.join(mp, 'volume.img');
      // Publish [4, 8) and [8, 12) MiB; leave [0, 4) and [12, 16) unresolved.
      expect(readDirect(img, 4 * MiB, 8 * MiB).equals(want.subarray(4 * MiB, 12 * MiB))).toBe(true);
      // The daemon splices large reads, and splice fills gatefs's page cache
      // even under direct_io: drop it, so that the reads below reach the gate.
      execFileSync('dd', [`if=${path.join(gateMp, 'backing')}`, 'iflag=nocache', 'count=0', 'status=none']);

      fs.rmSync(gate);
      const outs = [path.join(tmp, 'a1'), path.join(tmp, 'a2')];
      const stuck = [ddDirect(img, 1 * MiB, 4, outs[0]), ddDirect(img, 5 * MiB, 4, outs[1])];
      const exited = stuck.map((p) => new Promise<number | null>((resolve) => p.on('exit', resolve)));
      await until('both backing reads to wait at the gate', () => waiting() >= 2);

      // Meanwhile: a published region (served in C) and a new one (through JS),
      // read by other processes: a stalled daemon fails the guard, not hangs the test.
      const others = [path.join(tmp, 'b1'), path.join(tmp, 'b2')];
      const readers = [ddDirect(img, 8 * MiB, 64, others[0]), ddDirect(img, 12 * MiB, 64, others[1])];
      const codes = await Promise.all(readers.map((p) => new Promise<number | null>((resolve) => {
        const guard = setTimeout(() => p.kill('SIGKILL'), 20_000); // a hang guard, not a measurement
        p.on('exit', (code) => {
          clearTimeout(guard);
          resolve(code);
        });
      })));
      expect(codes, 'the other readers finished while the gated ones waited').toEqual([0, 0]);
      expect(fs.readFileSync(others[0]).equals(want.subarray(8 * MiB, 12 * MiB)), 'a published region').toBe(true);
      expect(fs.readFileSync(others[1]).equals(want.subarray(12 * MiB)), 'a region read for the first time').toBe(true);
      expect(stuck.map((p) => p.exitCode), 'the gated readers are still waiting').toEqual([null, null]);
      expect(waiting()).toBe(2);

      fs.writeFileSync(gate, '');
      expect(await Promise.all(exited)).toEqual([0, 0]);
      expect(fs.readFileSync(outs[0]).equals(want.subarray(1 * MiB, 1 * MiB + 256 * 1024))).toBe(true);
      expect(fs.readFileSync(outs[1]).equals(want.subarray(5 * MiB, 5 * MiB + 256 * 1024))).toBe(true);
    } finally {
      fs.writeFileSync(gate, '');
      unmount(mp);
    }
  });
});

/** Pids of mount daemons (started with --ready-fd) for mount point `mp`. */
function daemonsFor(mp: string): number[] {
  const pids: number[] = [];
  for (const p of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (argv.includes('--ready-fd') && argv.includes(mp)) pids.push(Number(p));
    } catch {
      // gone
    }
  }
  return pids;
}

describe('Ctrl-C while the mount is still opening a slow source', () => {
  // [] : bin/chainfs starts the daemon; -o debug: the CLI does (src/cli/launch.ts)
  // Ctrl-C signals the whole foreground job; `kill PID` (a script, a supervisor) the launcher alone
  const ways = [{ how: 'Ctrl-C', signal: 'SIGINT', group: true }, { how: 'kill PID', signal: 'SIGTERM', group: false }] as const;
  for (const extra of [[], ['-o', 'debug']]) for (const { how, signal, group } of ways) {
    it(`${extra.join(' ') || 'plain'}, ${how}: exits 130, and the daemon does not mount later, unseen`, async () => {
      const name = `interrupted${extra.length}${signal.toLowerCase()}`;
      const built = buildReplica({ ...scenario, name, backing: undefined }, tmp);
      const replica = path.join(tmp, 'source', path.basename(built.dir));
      fs.cpSync(built.dir, replica, { recursive: true });
      const mp = path.join(tmp, `mnt-${name}`);
      fs.mkdirSync(mp);
      fs.rmSync(gate);
      try {
        // its own process group, as a shell's foreground job: Ctrl-C signals the group
        const cli = spawn(path.join(__dirname, '..', 'bin', 'chainfs'), ['mount', path.join(gateMp, path.basename(replica)), mp, ...extra],
          { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        cli.stderr!.on('data', (d) => { stderr += d; });
        const exited = new Promise<number | null>((resolve) => cli.on('exit', resolve));
        await until('the daemon to wait at the gate, opening the replica', () => waiting() >= 1 && daemonsFor(mp).length === 1);
        const daemon = daemonsFor(mp)[0];
        process.kill(group ? -cli.pid! : cli.pid!, signal);
        expect(await exited).toBe(130);
        expect(stderr).toBe('chainfs: interrupted; nothing was mounted\n');
        fs.writeFileSync(gate, '');
        await until('the daemon to exit once its read returns', () => !fs.existsSync(`/proc/${daemon}`) || fs.readFileSync(`/proc/${daemon}/stat`, 'utf8').split(' ')[2] === 'Z');
        expect(isMounted(mp)).toBe(false);
      } finally {
        fs.writeFileSync(gate, '');
        for (const pid of daemonsFor(mp)) process.kill(pid, 'SIGKILL');
        spawnSync('fusermount', ['-uz', mp]);
      }
    });
  }
});

describe('a source slower than 30 s to open', () => {
  it('the mount waits for it, saying so once, and mounts (plain, and -o debug through the CLI)', async () => {
    const built = buildReplica({ ...scenario, name: 'slow-open', backing: undefined }, tmp);
    const replica = path.join(tmp, 'source', path.basename(built.dir));
    fs.cpSync(built.dir, replica, { recursive: true });
    const runs = [[], ['-o', 'debug']].map((extra, i) => {
      const mp = path.join(tmp, `mnt-slow-open${i}`);
      fs.mkdirSync(mp);
      return { mp, extra, stderr: '', exit: undefined as Promise<number | null> | undefined };
    });
    fs.rmSync(gate);
    try {
      for (const r of runs) {
        const cli = spawn(path.join(__dirname, '..', 'bin', 'chainfs'), ['mount', path.join(gateMp, path.basename(replica)), r.mp, ...r.extra],
          { stdio: ['ignore', 'ignore', 'pipe'] });
        cli.stderr!.on('data', (d) => { r.stderr += d; });
        r.exit = new Promise((resolve) => cli.on('exit', resolve));
      }
      const deadline = Date.now() + 45_000;
      while (!runs.every((r) => /still opening the source after 30 s/.test(r.stderr))) {
        if (Date.now() > deadline) throw new Error(`no notice after 45 s: ${runs.map((r) => JSON.stringify(r.stderr)).join(', ')}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      fs.writeFileSync(gate, '');
      for (const r of runs) {
        expect(await r.exit, r.stderr).toBe(0);
        expect(r.stderr).toMatch(/^chainfs: still opening the source after 30 s \(daemon \d+\); waiting for it, Ctrl-C gives up\n$/);
        expect(isMounted(r.mp)).toBe(true);
        expect(fs.readdirSync(r.mp)).toContain('volume.img');
      }
    } finally {
      fs.writeFileSync(gate, '');
      for (const r of runs) {
        await r.exit;
        spawnSync(path.join(__dirname, '..', 'bin', 'chainfs'), ['umount', r.mp]);
      }
    }
  }, 90_000);
});
