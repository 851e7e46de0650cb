/**
 * Broken replica directories and metadata (volume.meta, .img.meta, layer
 * files, permissions) against every command: exit 1, one line naming the
 * file, no stack, no hang, no mount or daemon left, the source untouched.
 * The cases live in helpers/broken-replicas.ts.
 *
 * Then what is not an error: states chainfs recovers from or reads with a
 * warning, each warning one line.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASES, BROKEN_CASES, HEAD, describeBrokenCases, runCli, settle, treeChanges } from './helpers/broken-replicas';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { fingerprintTree } from './helpers/tree';

describeBrokenCases(BROKEN_CASES.filter((c) => c.base === 'plain'));

describe('states read with a warning', () => {
  let tmp: string;
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-hardening-warn-')); });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** map and cat succeed with exactly `warnings` lines, each "chainfs: warning: ..." matching in order; cat's bytes are the head view. */
  async function expectWarned(r: BuiltReplica, args: string[], warnings: RegExp[]): Promise<void> {
    settle(r.root);
    const before = fingerprintTree(r.root);
    const [map, cat, inspect] = await Promise.all([
      runCli(['map', r.dir, ...args]), runCli(['cat', r.dir, ...args]), runCli(['inspect', r.dir, ...args]),
    ]);
    for (const run of [map, cat]) {
      expect(run.code, run.stderr).toBe(0);
      const lines = run.stderr.split('\n').slice(0, -1);
      expect(lines.length, run.stderr).toBe(warnings.length);
      lines.forEach((l, i) => {
        expect(l).toMatch(/^chainfs: warning: /);
        expect(l).toMatch(warnings[i]);
      });
    }
    expect(cat.stdout.equals(r.model.view(r.model.head))).toBe(true);
    // inspect lists the warnings in its report, not on stderr
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(inspect.stderr).toBe('');
    for (const w of warnings) expect(inspect.stdout.toString()).toMatch(w);
    const out = path.join(tmp, `export-${path.basename(path.dirname(r.root))}.img`);
    const ex = await runCli(['export', r.dir, out, '--quiet', ...args]);
    expect(ex.code, ex.stderr).toBe(0);
    expect(fs.readFileSync(out).equals(r.model.view(r.model.head))).toBe(true);
    expect(treeChanges(before, fingerprintTree(r.root))).toEqual([]);
  }

  it('volume.meta missing: recovered in memory as the engine does, never written', async () => {
    const r = buildReplica(BASES.plain, tmp);
    fs.rmSync(path.join(r.dir, 'volume.meta'));
    await expectWarned(r, [], [/volume\.meta: missing or empty; recovered in memory .*head volume-head-002\.img/]);
    expect(fs.existsSync(path.join(r.dir, 'volume.meta'))).toBe(false);
  });

  it('volume.meta empty (a crash between create and write): recovered the same way', async () => {
    const r = buildReplica(BASES.plain, tmp);
    fs.writeFileSync(path.join(r.dir, 'volume.meta'), '');
    await expectWarned(r, [], [/volume\.meta: missing or empty; recovered in memory/]);
    expect(fs.readFileSync(path.join(r.dir, 'volume.meta'), 'utf8')).toBe('');
  });

  it('Rebuilding with --force', async () => {
    const r = buildReplica({ ...BASES.plain, rebuilding: true }, tmp);
    await expectWarned(r, ['--force'], [/Rebuilding: its data may be incomplete/]);
  });

  it('Dirty, with a recorded Error spread over lines: each warning is one line', async () => {
    const r = buildReplica({ ...BASES.plain, dirty: true }, tmp);
    const meta = JSON.parse(fs.readFileSync(path.join(r.dir, 'volume.meta'), 'utf8'));
    fs.writeFileSync(path.join(r.dir, 'volume.meta'), `${JSON.stringify({ ...meta, Error: 'replica failed:\nI/O error\r\n\u001b[31mred' })}\n`);
    await expectWarned(r, [], [/Dirty is true/, /Error recorded: replica failed:\\nI\/O error/]);
  });

  it('the head is named by its file, never by its .meta Name (which lies, longhorn#13728)', async () => {
    const r = buildReplica(BASES.plain, tmp);
    const file = path.join(r.dir, `${HEAD}.meta`);
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(`"Name":"${HEAD}"`, '"Name":"../../../etc/passwd"'));
    await expectWarned(r, [], []);
  });
});

describe('usage errors', () => {
  let tmp: string;
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-hardening-usage-')); });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('exit 2 with one line and no stack, before touching the replica', async () => {
    const r = buildReplica(BASES.plain, tmp);
    settle(r.root);
    const before = fingerprintTree(r.root);
    const mp = path.join(tmp, 'mnt');
    fs.mkdirSync(mp);
    const cases: [string[], RegExp][] = [
      [['cat'], /missing required argument 'source'/],
      [['map', r.dir, '--bogus'], /unknown option '--bogus'/],
      [['umount', mp, mp], /too many arguments/],
      [['inspect', r.dir, '--snapshot', 's1'], /unknown option '--snapshot'/],
      [['mount', r.dir, mp, '--cache-mb', '0'], /--cache-mb .* is invalid/],
      [['mount', r.dir], /mount needs a source and a mount point/],
      [['export', r.dir, path.join(tmp, 'o.img'), '--format', 'vmdk'], /--format .* is invalid/],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args)));
    results.forEach((res, i) => {
      const [args, message] = cases[i];
      const lines = res.stderr.split('\n').filter((l) => l !== '');
      expect({ args, code: res.code, lines: lines.length }).toEqual({ args, code: 2, lines: 1 });
      expect(lines[0]).toMatch(message);
      expect(res.stderr).not.toMatch(/^\s+at /m);
    });
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith('.img'))).toEqual([]);
    expect(treeChanges(before, fingerprintTree(r.root))).toEqual([]);
  });
});

describe('a path that is no source at all', () => {
  let tmp: string;
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-hardening-nosource-')); });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('a small file: neither a replica directory nor a v2 disk, and why not; a missing target: no such file', async () => {
    const file = path.join(tmp, 'disk.img');
    fs.writeFileSync(file, 'x');
    const missing = path.join(tmp, 'no-such-target');
    const [asDisk, asTarget] = await Promise.all([runCli(['inspect', file]), runCli(['verify', missing])]);
    expect(asDisk.code).toBe(1);
    expect(asDisk.stderr.trim()).toBe(`chainfs: ${file}: not a directory (a regular file); expected a Longhorn replica directory `
      + 'or a v2 disk (no SPDK blobstore signature "SPDKBLOB" at byte 0)');
    expect(asTarget.code).toBe(2); // verify: trouble
    expect(asTarget.stderr.trim()).toBe(`chainfs: ${missing}: backup target: no such file or directory`);
  });
});
