/**
 * Parsers for the engine's JSON metadata (Go's json.Encoder of structs with
 * no tags: `volume.meta` and `<disk>.img.meta`). Strict about types, lenient
 * about unknown fields (newer engines add some). Never writes anything.
 */
import { ChainfsError, oneLine } from '../../errors';
import { isDiskFile, isPlainName } from './names';

/** volume.meta (longhorn-engine pkg/replica/replica.go `Info`). */
export interface VolumeMeta {
  size: number;
  head: string;
  dirty: boolean;
  rebuilding: boolean;
  error: string;
  parent: string;
  sectorSize: number;
  /** BackingFilePath, or the legacy BackingFileName (before v1.1.1); "" when none. */
  backingFilePath: string;
  encrypted: boolean;
}

/** `<disk>.img.meta` (longhorn-engine `disk`). `Name` is not kept: it lies (longhorn#13728). */
export interface DiskMeta {
  parent: string;
  removed: boolean;
  userCreated: boolean;
  created: string;
  labels: Record<string, string> | null;
}

type Json = Record<string, unknown>;

function parseObject(file: string, text: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    // V8 quotes the text around the error, newlines and all: keep the report on one line.
    throw new ChainfsError(file, `invalid JSON (${oneLine((e as Error).message, 200)})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ChainfsError(file, 'invalid metadata: expected a JSON object');
  }
  return v as Json;
}

function field<T>(file: string, o: Json, key: string, type: 'string' | 'boolean' | 'number', dflt?: T): T {
  const v = o[key];
  if (v === undefined || v === null) {
    if (dflt !== undefined) return dflt;
    throw new ChainfsError(file, `invalid metadata: field "${key}" is missing`);
  }
  if (typeof v !== type) {
    throw new ChainfsError(file, `invalid metadata: field "${key}" must be a ${type}, got ${JSON.stringify(v).slice(0, 40)}`);
  }
  return v as T;
}

/** Checks a name read from metadata before it is used as a file name. */
function diskName(file: string, key: string, v: string, allowEmpty: boolean): string {
  if (v === '' && allowEmpty) return v;
  if (!isPlainName(v)) {
    throw new ChainfsError(file, `invalid metadata: ${key} ${JSON.stringify(v)} is not a plain file name in the replica directory`);
  }
  if (!isDiskFile(v)) {
    throw new ChainfsError(file, `invalid metadata: ${key} ${JSON.stringify(v)} is not a Longhorn disk file name (volume-head-NNN.img or volume-snap-NAME.img)`);
  }
  return v;
}

export function parseVolumeMeta(file: string, text: string): VolumeMeta {
  const o = parseObject(file, text);
  const size = field<number>(file, o, 'Size', 'number');
  if (Number.isInteger(size) && size > Number.MAX_SAFE_INTEGER) {
    // JSON.parse has already rounded it: say what is wrong rather than call it no integer
    throw new ChainfsError(file, `invalid metadata: Size ${size} is too large (over 2^53 bytes, 8 PiB: no real volume is)`);
  }
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new ChainfsError(file, `invalid metadata: Size ${size} is not a non-negative integer`);
  }
  if (size % 512 !== 0) {
    throw new ChainfsError(file, `invalid metadata: Size ${size} is not a multiple of 512`);
  }
  const backing = field<string>(file, o, 'BackingFilePath', 'string', '') ||
    field<string>(file, o, 'BackingFileName', 'string', '');
  return {
    size,
    head: diskName(file, 'Head', field<string>(file, o, 'Head', 'string'), false),
    dirty: field<boolean>(file, o, 'Dirty', 'boolean', false),
    rebuilding: field<boolean>(file, o, 'Rebuilding', 'boolean', false),
    error: field<string>(file, o, 'Error', 'string', ''),
    parent: diskName(file, 'Parent', field<string>(file, o, 'Parent', 'string', ''), true),
    sectorSize: field<number>(file, o, 'SectorSize', 'number', 512),
    backingFilePath: backing,
    encrypted: field<boolean>(file, o, 'Encrypted', 'boolean', false),
  };
}

export function parseDiskMeta(file: string, text: string): DiskMeta {
  const o = parseObject(file, text);
  const labels = o.Labels;
  if (labels !== undefined && labels !== null) {
    if (typeof labels !== 'object' || Array.isArray(labels) ||
        Object.values(labels as Json).some((v) => typeof v !== 'string')) {
      throw new ChainfsError(file, 'invalid metadata: Labels must be an object of strings or null');
    }
  }
  return {
    parent: diskName(file, 'Parent', field<string>(file, o, 'Parent', 'string', ''), true),
    removed: field<boolean>(file, o, 'Removed', 'boolean', false),
    userCreated: field<boolean>(file, o, 'UserCreated', 'boolean', false),
    created: field<string>(file, o, 'Created', 'string', ''),
    labels: (labels ?? null) as Record<string, string> | null,
  };
}
