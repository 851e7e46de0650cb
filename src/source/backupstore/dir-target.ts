/**
 * A backup target in a local directory: a mounted NFS/CIFS share or a copy
 * (Longhorn's vfs/nfs/cifs drivers, `fsops/fsops.go`). Files open
 * O_RDONLY|O_NOFOLLOW (a symlink, FIFO or device is listed, and reading it
 * is refused in one line); Longhorn's leftover `*.tmp.<n>` files are left out
 * by the callers' suffix filters, as `util.ExtractNames` does.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, fsError } from '../../errors';
import { TargetMissing, tooLarge, type BackupTarget, type Listing } from './target';

const RO = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

export class DirTarget implements BackupTarget {
  readonly label: string;
  readonly localDir: string;
  readonly remote = false;
  /** Two cores decompress; the disk rarely needs more in flight. */
  readonly defaultJobs = 4;

  constructor(dir: string, label: string) {
    this.localDir = dir;
    this.label = label;
    let st: fs.Stats;
    try {
      st = fs.statSync(path.join(dir, 'backupstore'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(dir)) throw fsError(dir, e, 'backup target');
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ChainfsError(dir, 'not a Longhorn backup target: no backupstore/ directory in it');
      }
      throw fsError(dir, e, 'cannot read backup target');
    }
    if (!st.isDirectory()) throw new ChainfsError(path.join(dir, 'backupstore'), 'is not a directory');
  }

  where(key: string): string {
    return path.join(this.localDir, key);
  }

  async get(key: string, maxBytes = Infinity): Promise<Buffer> {
    return (await this.read(key, Infinity, maxBytes)).data;
  }

  head(key: string, bytes: number): Promise<{ data: Buffer; size: number }> {
    return this.read(key, bytes);
  }

  private async read(key: string, limit: number, maxBytes = Infinity): Promise<{ data: Buffer; size: number }> {
    const file = this.where(key);
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(file, RO);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new TargetMissing(key, file);
      if (code === 'ELOOP') throw new ChainfsError(file, 'is a symbolic link, not a regular file (links inside a target are not followed)');
      throw fsError(file, e, 'cannot open');
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new ChainfsError(file, 'is not a regular file');
      if (st.size > maxBytes) throw new ChainfsError(file, tooLarge(st.size, maxBytes));
      const want = Math.min(st.size, limit);
      const buf = Buffer.allocUnsafe(want);
      let got = 0;
      while (got < want) {
        // At most 1 GiB a call: a read longer than 2^31 - 1 bytes is refused by Node (an abort, not an error).
        const { bytesRead } = await fh.read(buf, got, Math.min(want - got, 1 << 30), got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return { data: got === want ? buf : buf.subarray(0, got), size: st.size };
    } catch (e) {
      if (e instanceof ChainfsError) throw e;
      throw fsError(file, e, 'cannot read');
    } finally {
      await fh.close();
    }
  }

  async list(prefix: string): Promise<Listing> {
    const dir = this.where(prefix);
    let ents: fs.Dirent[];
    try {
      ents = await fs.promises.readdir(dir, { withFileTypes: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return { dirs: [], files: [] };
      throw fsError(dir, e, 'cannot list');
    }
    const out: Listing = { dirs: [], files: [] };
    for (const d of ents) {
      if (d.isDirectory()) out.dirs.push(d.name);
      // Only lock files need a time (is a deletion running?): no stat per block.
      else if (d.isFile()) out.files.push({ name: d.name, mtime: d.name.endsWith('.lck') ? await mtime(path.join(dir, d.name)) : undefined });
      // A FIFO, socket, device or symlink is listed too: reading it is refused in one line
      // (a backup cfg of that name is then listed as unreadable, not silently left out).
      else out.files.push({ name: d.name, mtime: undefined });
    }
    out.dirs.sort();
    out.files.sort((a, b) => (a.name < b.name ? -1 : 1));
    return out;
  }

  async listAll(prefix: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (p: string): Promise<void> => {
      const l = await this.list(p);
      for (const f of l.files) out.push(p + f.name);
      for (const d of l.dirs) await walk(`${p}${d}/`);
    };
    await walk(prefix);
    return out;
  }

  close(): void {
    // holds no descriptor between calls
  }
}

async function mtime(file: string): Promise<Date | undefined> {
  try {
    return (await fs.promises.lstat(file)).mtime;
  } catch {
    return undefined;
  }
}
