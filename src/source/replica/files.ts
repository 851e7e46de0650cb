/**
 * Opening files of the source replica: read-only, never following a symlink,
 * never blocking on a FIFO or a device. The source is sacred: nothing here
 * (or anywhere in chainfs) opens it for writing.
 */
import * as fs from 'node:fs';
import { ChainfsError, fsError } from '../../errors';

const RO_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

/** Metadata files are small; a larger one is not Longhorn's. */
const MAX_META_BYTES = 1 << 20;

/** Opens a regular file read-only; refuses symlinks, FIFOs, devices, directories. */
export function openRegularReadOnly(path: string, what = 'file'): number {
  let fd: number;
  try {
    fd = fs.openSync(path, RO_FLAGS);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new ChainfsError(path, `${what} is a symbolic link (refused: replica files must be regular files)`);
    }
    throw fsError(path, e, `cannot open ${what}`);
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new ChainfsError(path, `${what} is not a regular file (${fileKind(st)})`);
  }
  return fd;
}

/** Reads a small metadata file as text, with the same protections. */
export function readMetaFile(path: string): string {
  const fd = openRegularReadOnly(path, 'metadata file');
  try {
    const size = fs.fstatSync(fd).size;
    if (size > MAX_META_BYTES) throw new ChainfsError(path, `metadata file is too large (${size} bytes)`);
    const buf = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const n = fs.readSync(fd, buf, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    return buf.toString('utf8', 0, got);
  } catch (e) {
    if (e instanceof ChainfsError) throw e;
    throw fsError(path, e, 'cannot read metadata file');
  } finally {
    fs.closeSync(fd);
  }
}

export function fileKind(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isFile()) return 'a regular file';
  return 'an unknown kind of file';
}
