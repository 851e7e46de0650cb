/** A fingerprint of a directory tree: every file's size, blocks, mtime and SHA-256. */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface FileFingerprint { size: number; blocks: number; mtimeNs: bigint; mode: number; sha256: string }

export function fingerprintTree(root: string): Map<string, FileFingerprint> {
  // Written back first: ext4 allocates extent tree blocks at writeback, which would move st_blocks between two calls.
  execFileSync('sync', ['-f', root]);
  const out = new Map<string, FileFingerprint>();
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      const st = fs.lstatSync(p, { bigint: true });
      if (e.isDirectory()) {
        out.set(path.relative(root, p) + '/', { size: 0, blocks: 0, mtimeNs: st.mtimeNs, mode: Number(st.mode), sha256: '' });
        walk(p);
      } else {
        const sha = e.isFile() ? createHash('sha256').update(fs.readFileSync(p)).digest('hex') : '';
        out.set(path.relative(root, p), { size: Number(st.size), blocks: Number(st.blocks), mtimeNs: st.mtimeNs, mode: Number(st.mode), sha256: sha });
      }
    }
  };
  walk(root);
  return out;
}
