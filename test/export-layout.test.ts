/**
 * `chainfs export --layout longhorn`: OUT is a backing-image directory as
 * Longhorn's backing-image-manager writes it, `backing` plus `backing.cfg`,
 * checked field by field against the file itself (the mtime string is
 * formatted here independently, by coreutils' stat), plus the JSON summary
 * and the name rules.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { goTimeString } from '../src/materialize/longhorn-layout';
import { chainfs, chainfsOk } from './helpers/cli';
import { buildOracle, type Oracle } from './helpers/oracle';
import { qemuImg } from './helpers/qemu';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { noBacking, qcow2Backing } from './helpers/scenarios';
import { fingerprintTree } from './helpers/tree';

// The CLI runs through spawnSync: let the test worker's event loop breathe between tests, or
// vitest's own RPC to it times out while a run of synchronous tests goes on.
const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));
afterEach(breathe);

const sha512File = (f: string) => createHash('sha512').update(fs.readFileSync(f)).digest('hex');
const CFG_KEYS = ['name', 'uuid', 'size', 'virtualSize', 'realSize', 'expectedChecksum', 'currentChecksum', 'modificationTime'];

/** Go's Time.UTC().String() of the file's mtime, from `stat` (GNU coreutils), not from chainfs's code. */
function goMtime(file: string): string {
  const y = execFileSync('stat', ['-c', '%y', file], { encoding: 'utf8', env: { ...process.env, TZ: 'UTC' } }).trim();
  const m = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))? \+0000$/.exec(y);
  if (!m) throw new Error(`unexpected stat output ${y}`);
  const frac = (m[2] ?? '').replace(/0+$/, '');
  return `${m[1]}${frac ? `.${frac}` : ''} +0000 UTC`;
}

function oneLineError(r: { code: number | null; stderr: string }): string {
  expect(r.code).toBe(1);
  const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('chainfs: warning:'));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^chainfs: /);
  return lines[0];
}

let tmp: string;
let built: BuiltReplica;
let oracle: Oracle;
let before: ReturnType<typeof fingerprintTree>;
let q: BuiltReplica;
let qOracle: Oracle;
let qBefore: ReturnType<typeof fingerprintTree>;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-layout-'));
  built = buildReplica(noBacking, tmp);
  oracle = buildOracle(noBacking, tmp);
  before = fingerprintTree(built.root);
  q = buildReplica(qcow2Backing, tmp);
  qOracle = buildOracle(qcow2Backing, tmp);
  qBefore = fingerprintTree(q.root);
});

afterAll(() => {
  try {
    if (built) expect(fingerprintTree(built.root)).toEqual(before);
    if (q) expect(fingerprintTree(q.root)).toEqual(qBefore);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

describe('--layout longhorn', () => {
  it('writes backing and backing.cfg exactly as the backing-image-manager does', () => {
    const out = path.join(tmp, 'bi-export-3a7c1d2e');
    const stdout = chainfsOk(['export', built.dir, out, '--layout', 'longhorn', '--quiet']).toString();
    expect(fs.readdirSync(out).sort()).toEqual(['backing', 'backing.cfg']);
    const backing = path.join(out, 'backing');
    const text = fs.readFileSync(path.join(out, 'backing.cfg'), 'utf8');
    const cfg = JSON.parse(text);
    expect(text).toBe(JSON.stringify(cfg)); // compact, as json.Marshal: no spaces, no trailing newline
    expect(Object.keys(cfg)).toEqual(CFG_KEYS);
    const st = fs.statSync(backing);
    const sha = sha512File(backing);
    expect(cfg.name).toBe('/data/backing-images/bi-export-3a7c1d2e/backing');
    expect(cfg.uuid).toBe('3a7c1d2e');
    expect(cfg.size).toBe(st.size);
    expect(cfg.size).toBe(noBacking.size);
    expect(cfg.virtualSize).toBe(JSON.parse(qemuImg(['info', '--output=json', backing]))['virtual-size']);
    expect(cfg.realSize).toBe(st.blocks * 512);
    expect(cfg.expectedChecksum).toBe('');
    expect(cfg.currentChecksum).toBe(sha);
    expect(cfg.modificationTime).toBe(goMtime(backing));
    // The checksum is on by default for this layout, printed as sha512sum prints it.
    expect(stdout).toBe(`${sha}  ${backing}\n`);
    expect(fs.readFileSync(backing).equals(fs.readFileSync(oracle.views.get(built.views[0].file)!))).toBe(true);
  });

  it('qcow2 in the layout: size is the container, virtualSize the view', () => {
    const snap = q.views.find((v) => v.snapshot === 's1')!;
    const out = path.join(tmp, 'bi-qcow2-0badc0de');
    chainfsOk(['export', q.dir, out, '--layout', 'longhorn', '--format', 'qcow2', '--snapshot', 's1', '--quiet']);
    const backing = path.join(out, 'backing');
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'backing.cfg'), 'utf8'));
    const info = JSON.parse(qemuImg(['info', '--output=json', backing]));
    expect(info.format).toBe('qcow2');
    expect(info['backing-filename']).toBeUndefined();
    expect(cfg.size).toBe(fs.statSync(backing).size);
    expect(cfg.virtualSize).toBe(info['virtual-size']);
    expect(cfg.virtualSize).toBe(snap.size);
    expect(cfg.realSize).toBe(fs.statSync(backing).blocks * 512);
    expect(cfg.currentChecksum).toBe(sha512File(backing));
    expect(cfg.modificationTime).toBe(goMtime(backing));
    qemuImg(['check', '-q', backing]);
    qemuImg(['compare', '-q', '-f', 'qcow2', '-F', 'raw', backing, qOracle.views.get(snap.file)!]);
  });

  it('without a -<uuid> suffix, writes <name>-<uuid> (directory name and backing.cfg agree) and says so', () => {
    const out = path.join(tmp, 'plain.name');
    const r = chainfs(['export', built.dir, out, '--layout', 'longhorn', '--quiet', '--no-checksum']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: .*no -<8-hex uuid> suffix; writing .*plain\.name-[0-9a-f]{8} /);
    expect(r.stdout.length).toBe(0);
    expect(fs.existsSync(out)).toBe(false);
    const made = fs.readdirSync(tmp).filter((n) => /^plain\.name-[0-9a-f]{8}$/.test(n));
    expect(made).toHaveLength(1);
    const dir = path.join(tmp, made[0]);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'backing.cfg'), 'utf8'));
    expect(made[0]).toBe(`plain.name-${cfg.uuid}`);
    expect(cfg.name).toBe(`/data/backing-images/${made[0]}/backing`);
    expect(cfg.currentChecksum).toBe(''); // --no-checksum
    expect(cfg.modificationTime).toBe(goMtime(path.join(dir, 'backing')));
  });

  it('refuses names Longhorn would refuse, before writing anything', () => {
    for (const name of ['bad name-3a7c1d2e', '_leading-3a7c1d2e', 'x', `${'a'.repeat(65)}-3a7c1d2e`]) {
      const out = path.join(tmp, name);
      const line = oneLineError(chainfs(['export', built.dir, out, '--layout', 'longhorn', '--quiet']));
      expect(line).toMatch(/not a valid backing image name/);
      expect(fs.existsSync(out)).toBe(false);
    }
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.chainfs-'))).toEqual([]);
  });

  it('replaces an existing directory only with --overwrite, and only if it holds just a backing image', () => {
    const out = path.join(tmp, 'bi-again-12345678');
    chainfsOk(['export', built.dir, out, '--layout', 'longhorn', '--quiet', '--snapshot', 'user-snap-2']);
    const first = fs.readFileSync(path.join(out, 'backing.cfg'), 'utf8');
    expect(oneLineError(chainfs(['export', built.dir, out, '--layout', 'longhorn', '--quiet']))).toMatch(/already exists; pass --overwrite/);
    expect(fs.readFileSync(path.join(out, 'backing.cfg'), 'utf8')).toBe(first);

    chainfsOk(['export', built.dir, out, '--layout', 'longhorn', '--quiet', '--overwrite']);
    const backing = path.join(out, 'backing');
    expect(fs.readFileSync(backing).equals(fs.readFileSync(oracle.views.get(built.views[0].file)!))).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'backing.cfg'), 'utf8')).currentChecksum).toBe(sha512File(backing));

    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    expect(oneLineError(chainfs(['export', built.dir, out, '--layout', 'longhorn', '--quiet', '--overwrite'])))
      .toMatch(/holds more than a backing image \(notes\.txt\)/);
    expect(fs.readFileSync(path.join(out, 'notes.txt'), 'utf8')).toBe('mine');
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.chainfs-'))).toEqual([]);
  });
});

describe('--json', () => {
  it('prints path, format, size, allocatedBytes, sha512 and seconds', () => {
    const out = path.join(tmp, 'summary.qcow2');
    const j = JSON.parse(chainfsOk(['export', built.dir, out, '--format', 'qcow2', '--checksum', '--json']).toString());
    const st = fs.statSync(out);
    expect(j.path).toBe(out);
    expect(j.format).toBe('qcow2');
    expect(j.size).toBe(st.size);
    expect(j.virtualSize).toBe(noBacking.size);
    expect(j.allocatedBytes).toBe(st.blocks * 512);
    expect(j.sha512).toBe(sha512File(out));
    expect(typeof j.seconds).toBe('number');
    expect(j.seconds).toBeGreaterThan(0);

    const raw = path.join(tmp, 'summary.raw');
    const k = JSON.parse(chainfsOk(['export', built.dir, raw, '--json']).toString());
    expect(k.format).toBe('raw');
    expect(k.size).toBe(noBacking.size);
    expect(k.sha512).toBeNull(); // off by default for a plain file
  });
});

describe('goTimeString', () => {
  it('matches Go for whole seconds, trailing zeros, and before 1970', () => {
    expect(goTimeString(1_700_000_000_000_000_000n)).toBe('2023-11-14 22:13:20 +0000 UTC');
    expect(goTimeString(1_700_000_000_123_456_000n)).toBe('2023-11-14 22:13:20.123456 +0000 UTC');
    expect(goTimeString(1_700_000_000_000_000_001n)).toBe('2023-11-14 22:13:20.000000001 +0000 UTC');
    expect(goTimeString(-1n)).toBe('1969-12-31 23:59:59.999999999 +0000 UTC');
  });
});
