/**
 * Security: who may read a mount (--allow-other and file modes, checked as
 * `nobody`), how the daemon holds the source files (read-only, O_NOFOLLOW),
 * and the warning for a replica that another process has open for writing.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AS_NOBODY, BASES, HEAD, S1, S2, readAt, runCli, settle, treeChanges } from './helpers/broken-replicas';
import { daemonPid, mountReplica, unmount, unmountAll } from './helpers/mount';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { fingerprintTree } from './helpers/tree';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-security-'));
fs.chmodSync(tmp, 0o755); // nobody must reach the mount points
afterEach(() => unmountAll());
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** What `nobody` gets reading each file: 'ok:<sha-less length>' or the error code. */
function readAsNobody(files: string[]): string[] {
  const script = `for (const f of process.argv.slice(1)) { try { console.log('ok:' + require('fs').readFileSync(f).length); } catch (e) { console.log(e.code); } }`;
  const r = spawnSync(AS_NOBODY[0], [...AS_NOBODY.slice(1), process.execPath, '-e', script, ...files], { encoding: 'utf8', timeout: 10_000 });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.trim().split('\n');
}

describe('who may read the mounted images', () => {
  let r: BuiltReplica;
  let before: ReturnType<typeof fingerprintTree>;
  beforeAll(() => {
    r = buildReplica(BASES.plain, tmp);
    fs.chmodSync(path.join(r.dir, HEAD), 0o640); // group only: not for others
    fs.chmodSync(path.join(r.dir, S1), 0o644);   // world-readable
    fs.chmodSync(path.join(r.dir, S2), 0o600);   // owner only
    settle(r.root);
    before = fingerprintTree(r.root);
  });
  afterAll(() => expect(treeChanges(before, fingerprintTree(r.root))).toEqual([]));

  const files = (mp: string) => [path.join(mp, 'volume.img'), path.join(mp, 'snapshots/s1.img'), path.join(mp, 'snapshots/s2.img'), path.join(mp, 'chain.json')];

  it('without --allow-other: only the mounting user (root) can read; nobody gets EACCES for everything', () => {
    const mp = path.join(tmp, 'mnt-private');
    mountReplica(r.dir, mp);
    expect(readAsNobody([mp, ...files(mp)]).map((x) => x.replace(/^ok:.*/, 'ok'))).toEqual(['EACCES', 'EACCES', 'EACCES', 'EACCES', 'EACCES']);
    for (const f of files(mp)) expect(fs.readFileSync(f).length).toBeGreaterThan(0);
    unmount(mp);
  });

  it('with --allow-other: default_permissions, and each image is readable by others iff its replica file is', () => {
    const mp = path.join(tmp, 'mnt-shared');
    mountReplica(r.dir, mp, ['--allow-other']);
    expect(fs.statSync(path.join(mp, 'volume.img')).mode & 0o777).toBe(0o440);
    expect(fs.statSync(path.join(mp, 'snapshots/s1.img')).mode & 0o777).toBe(0o444);
    expect(fs.statSync(path.join(mp, 'snapshots/s2.img')).mode & 0o777).toBe(0o400);
    expect(readAsNobody(files(mp))).toEqual(['EACCES', `ok:${1024 * 1024}`, 'EACCES', expect.stringMatching(/^ok:\d+$/)]);
    // root, the owner, reads everything
    expect(fs.readFileSync(path.join(mp, 'snapshots/s2.img')).equals(r.model.view(S2))).toBe(true);
    unmount(mp);
  });
});

describe('how the daemon holds the source', () => {
  it('every file of the replica and the backing image is open read-only with O_NOFOLLOW, and nothing is written', () => {
    const r = buildReplica(BASES.raw, tmp);
    settle(r.root);
    const before = fingerprintTree(r.root);
    const mp = path.join(tmp, 'mnt-fds');
    mountReplica(r.dir, mp);
    for (const v of ['volume.img', 'snapshots/s1.img', 'snapshots/s2.img']) expect(readAt(path.join(mp, v), 0, 1 << 20)).toBeInstanceOf(Buffer);
    const pid = daemonPid(mp);
    const held: { file: string; flags: number }[] = [];
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      let target: string;
      try {
        target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (!target.startsWith(`${r.root}/`)) continue;
      const flags = parseInt(/^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1], 8);
      held.push({ file: path.relative(r.root, target), flags });
    }
    expect(held.map((h) => h.file).sort()).toEqual([
      'backing-images/bi-raw-1f2e3d4c/backing',
      ...[HEAD, S1, S2].map((f) => `replicas/raw-abcd1234/${f}`),
    ].sort());
    for (const h of held) {
      expect(h.flags & 3, `${h.file} access mode`).toBe(fs.constants.O_RDONLY);
      expect(h.flags & fs.constants.O_NOFOLLOW, `${h.file} O_NOFOLLOW`).toBe(fs.constants.O_NOFOLLOW);
    }
    unmount(mp);
    expect(treeChanges(before, fingerprintTree(r.root))).toEqual([]);
  });
});

describe('a replica in use', () => {
  it('mount warns (stderr and log) about a process holding the head open for writing, and still mounts read-only', async () => {
    const r = buildReplica(BASES.plain, tmp);
    const head = path.join(r.dir, HEAD);
    const holder = spawn(process.execPath, ['-e', `require('fs').openSync(${JSON.stringify(head)}, 'r+'); console.log('open'); setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
      const mp = path.join(tmp, 'mnt-live');
      const log = path.join(tmp, 'live.log');
      fs.mkdirSync(mp);
      const m = await runCli(['mount', r.dir, mp, '--log', log]);
      expect(m.code, m.stderr).toBe(0);
      const lines = m.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^chainfs: warning: ${head.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: open for writing by process ${holder.pid} \\(node\\): the replica is in use`));
      expect(fs.readFileSync(log, 'utf8')).toMatch(new RegExp(`warning: .*open for writing by process ${holder.pid}`));
      expect(readAt(path.join(mp, 'volume.img'), 0, 4096)).toEqual(r.model.view(HEAD).subarray(0, 4096));
      const u = await runCli(['umount', mp]);
      expect(u.code, u.stderr).toBe(0);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('no warning when nobody writes to it', async () => {
    const r = buildReplica(BASES.plain, tmp);
    const mp = path.join(tmp, 'mnt-quiet');
    fs.mkdirSync(mp);
    const m = await runCli(['mount', r.dir, mp, '--log', path.join(tmp, 'quiet.log')]);
    expect(m.code, m.stderr).toBe(0);
    expect(m.stderr).toBe('');
    expect((await runCli(['umount', mp])).code).toBe(0);
  });
});
