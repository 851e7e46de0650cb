/**
 * Sources are never written, whatever the user asks for (findings of a
 * newcomer trying to break chainfs): no log, export or cache inside a
 * replica, its data root or its backing image's directory; no silent export
 * of a head that a running engine holds open; a reader that goes away from
 * a streamed qcow2 is not a crash.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHAINFS, chainfs } from './helpers/cli';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { rawBacking } from './helpers/scenarios';
import { fingerprintTree } from './helpers/tree';
import { treeChanges } from './helpers/broken-replicas';

let tmp: string;
let r: BuiltReplica;
let before: ReturnType<typeof fingerprintTree>;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-untouched-'));
  r = buildReplica(rawBacking, tmp);
  before = fingerprintTree(r.root);
});
afterAll(() => {
  expect(treeChanges(before, fingerprintTree(r.root))).toEqual([]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

function oneLine(res: { code: number | null; stderr: string }, re: RegExp): void {
  expect(res.code).toBe(1);
  const lines = res.stderr.split('\n').filter((l) => l !== '');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(re);
}

describe('no output inside a source', () => {
  it('mount --log inside the replica or its data root is refused before anything is opened', () => {
    const mp = path.join(tmp, 'mnt');
    fs.mkdirSync(mp, { recursive: true });
    const head = path.join(r.dir, r.views[0].file);
    for (const log of [head, path.join(r.dir, 'chainfs.log'), path.join(r.root, 'chainfs.log')]) {
      oneLine(chainfs(['mount', r.dir, mp, '--log', log]), /the log \(--log\) would be written inside the source/);
      oneLine(chainfs(['mount', r.dir, mp, '-f', '--log', log]), /the log \(--log\) would be written inside the source/);
    }
    expect(fs.readdirSync(mp)).toEqual([]);
  });

  it("export OUT inside the data root or the backing image's directory is refused", () => {
    oneLine(chainfs(['export', r.dir, path.join(r.root, 'replicas', 'x.raw'), '-q']), /is inside the source/);
    oneLine(chainfs(['export', r.dir, path.join(path.dirname(r.backingPath!), 'x.raw'), '-q']), /is inside the source/);
    // A data root given as the source (its warnings come first: no longhorn-disk.cfg in this one).
    const node = chainfs(['export', r.root, path.join(r.root, 'x.raw'), '-q']);
    expect(node.code).toBe(1);
    expect(node.stderr.trim().split('\n').pop()).toMatch(/x\.raw: is inside the source/);
    expect(fs.existsSync(path.join(r.root, 'x.raw'))).toBe(false);
  });
});

describe('a head held open for writing', () => {
  it('is not exported without --force, Dirty or not; a snapshot is', async () => {
    const head = path.join(r.dir, r.views[0].file);
    // A process holding the head open for writing, as a running engine does (it never writes here).
    const holder = spawn('python3', ['-c', `import os,sys,time; fd=os.open(${JSON.stringify(head)}, os.O_RDWR); print('ok', flush=True); time.sleep(60)`], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
      const out = path.join(tmp, 'live.raw');
      oneLine(chainfs(['export', r.dir, out, '-q']), /replica is in use: python3 \(pid \d+\) has .* open for writing.*--snapshot NAME.*--force/);
      expect(fs.existsSync(out)).toBe(false);
      const snap = r.views.find((v) => v.snapshot)!;
      expect(chainfs(['export', r.dir, out, '-q', '--snapshot', snap.snapshot!]).code).toBe(0);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('streams', () => {
  it('a reader that goes away from a streamed qcow2: exit 141, no stack', () => {
    const res = spawnSync('bash', ['-c', `"${CHAINFS}" export "${r.dir}" - --format qcow2 -q | head -c 1000 > /dev/null; echo "\${PIPESTATUS[0]}"`], { encoding: 'utf8' });
    expect(res.stdout.trim()).toBe('141');
    expect(res.stderr).toBe('');
  });
});

describe('a BackingFilePath that names the backing image directory', () => {
  it('is found in a copied tree, next to the replica', () => {
    const copy = fs.mkdtempSync(path.join(tmp, 'copy-'));
    execFileSync('bash', ['-c', `tar --sparse -C "${path.dirname(r.root)}" -cf - longhorn | tar -xf - -C "${copy}"`]);
    const dir = path.join(copy, 'longhorn', 'replicas', path.basename(r.dir));
    const meta = path.join(dir, 'volume.meta');
    const m = JSON.parse(fs.readFileSync(meta, 'utf8'));
    m.BackingFilePath = path.dirname(m.BackingFilePath); // `/host/.../backing-images/<name>-<uuid>`
    fs.writeFileSync(meta, `${JSON.stringify(m)}\n`);
    const a = chainfs(['cat', dir]);
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout.equals(chainfs(['cat', r.dir]).stdout)).toBe(true);
  });
});

describe('what the user names, said plainly', () => {
  it('an OUT directory that does not exist says so', () => {
    oneLine(chainfs(['export', r.dir, path.join(tmp, 'no-such-dir') + '/', '-q']), /no-such-dir\/: no such directory/);
  });

  it("--backing-file naming one of the replica's own layers is refused; one for a volume without a backing image is used with a warning", () => {
    const layer = path.join(r.dir, r.views[1].file);
    oneLine(chainfs(['cat', r.dir, '--backing-file', layer]), /is a file of the replica directory itself, not a backing image/);
    const plain = buildReplica({ ...rawBacking, name: 'plain', backing: undefined }, tmp);
    const res = chainfs(['cat', plain.dir, '--backing-file', r.backingPath!]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/warning: .*names no backing image \(BackingFilePath is empty\); using --backing-file .* anyway/);
  });
});
