/**
 * Opening a backing image: raw or qcow2, told apart by magic (the engine asks
 * `qemu-img info`, which does the same probing). Other image formats that
 * qemu would recognise are refused by name rather than read as raw garbage.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, fsError } from '../errors';
import { openRegularReadOnly } from '../source/replica/files';
import type { Layer } from './layer';
import { Qcow2Layer, isQcow2 } from './qcow2';
import { RawImageLayer } from './raw-image';

export type ImageFormat = 'raw' | 'qcow2';

export interface ImageLayer {
  layer: Layer;
  format: ImageFormat;
  warnings: string[];
}

const OTHER_FORMATS: [string, number, Buffer][] = [
  ['vmdk', 0, Buffer.from('KDMV')],
  ['vhdx', 0, Buffer.from('vhdxfile')],
  ['vpc (VHD)', 0, Buffer.from('conectix')],
  ['qed', 0, Buffer.from('QED\0', 'latin1')],
  ['vdi', 64, Buffer.from([0x7f, 0x10, 0xda, 0xbe])],
  ['luks', 0, Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe])],
];

export function openImage(file: string): ImageLayer {
  const fd = openRegularReadOnly(file, 'backing image');
  try {
    const st = fs.fstatSync(fd);
    const head = Buffer.alloc(512);
    const n = fs.readSync(fd, head, 0, 512, 0);
    const name = path.basename(file);
    if (isQcow2(fd)) {
      const q = Qcow2Layer.open(fd, file, name);
      return { layer: q, format: 'qcow2', warnings: q.warnings.map((w) => `${file}: ${w}`) };
    }
    for (const [fmt, at, magic] of OTHER_FORMATS) {
      if (n >= at + magic.length && head.subarray(at, at + magic.length).equals(magic)) {
        throw new ChainfsError(file, `backing image is in ${fmt} format; only raw and qcow2 are supported`);
      }
    }
    if (st.size % 512 !== 0) {
      throw new ChainfsError(file, `raw backing image size ${st.size} is not a multiple of 512`);
    }
    return { layer: new RawImageLayer(fd, file, name, st), format: 'raw', warnings: [] };
  } catch (e) {
    fs.closeSync(fd);
    if (e instanceof ChainfsError) throw e;
    throw fsError(file, e, 'cannot read backing image');
  }
}
