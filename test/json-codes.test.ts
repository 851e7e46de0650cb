/**
 * The JSON codes are matched on the one-line messages (src/cli/json.ts):
 * a message reworded so that no pattern knows it any more would silently
 * get the generic code. Every damaged replica of the hardening cases is
 * read with --json: a failure must carry a specific code (not `failed`,
 * not `internal`), and every warning inspect reports a specific one (not
 * `warning`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BROKEN_CASES, buildBroken, runCli } from './helpers/broken-replicas';

interface Seen { name: string; map: { code: number; doc: unknown }; inspect: { code: number; doc: unknown } }

let tmp: string;
const seen: Seen[] = [];

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-json-codes-'));
  fs.chmodSync(tmp, 0o755); // the nobody cases must reach their files
  const parse = (s: string): unknown => { try { return JSON.parse(s); } catch { return s; } };
  let next = 0;
  const worker = async () => {
    while (next < BROKEN_CASES.length) {
      const c = BROKEN_CASES[next++];
      const b = buildBroken(c, fs.mkdtempSync(path.join(tmp, 'case-')));
      const [m, i] = await Promise.all([
        runCli(['map', b.dir, '--json', ...b.args], { asNobody: c.asNobody }),
        runCli(['inspect', b.dir, '--json', '--no-contents', ...b.args], { asNobody: c.asNobody }),
      ]);
      seen.push({ name: c.name, map: { code: m.code ?? -1, doc: parse(m.stdout.toString()) }, inspect: { code: i.code ?? -1, doc: parse(i.stdout.toString()) } });
    }
  };
  await Promise.all([worker(), worker()]);
}, 120_000);
afterAll(() => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); });

describe('every damaged replica of the hardening cases, read with --json', () => {
  it('a failure has a specific error code; every warning of inspect a specific warning code', () => {
    expect(seen).toHaveLength(BROKEN_CASES.length);
    const generic: string[] = [];
    for (const s of seen) {
      for (const [cmd, r] of [['map', s.map], ['inspect', s.inspect]] as const) {
        const doc = r.doc as { error?: { code: string; message: string }; warnings?: { code: string; message: string }[] };
        if (r.code !== 0) {
          if (!doc?.error || doc.error.code === 'failed' || doc.error.code === 'internal') generic.push(`${s.name}: ${cmd} exit ${r.code}: ${JSON.stringify(doc?.error ?? doc)}`);
        }
        for (const w of doc?.warnings ?? []) if (w.code === 'warning') generic.push(`${s.name}: ${cmd} warning: ${w.message}`);
      }
    }
    expect(generic).toEqual([]);
  });
});
