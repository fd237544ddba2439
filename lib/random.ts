import { randomBytes } from 'node:crypto';
import type { Random } from './env.js';

/**
 * sfc32 (Small Fast Counter), a 128-bit-state PRNG with good statistical quality. Not for
 * cryptography: nonces drawn from it only need to differ between instances, not resist guessing.
 */
export class SeededRandom implements Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number | string) {
    // Spread the seed over the state with a string hash, then discard early outputs.
    const text = String(seed);
    let h = 1779033703 ^ text.length;
    const mix = (): number => {
      h = Math.imul(h ^ (h >>> 16), 2246822507);
      h = Math.imul(h ^ (h >>> 13), 3266489909);
      return (h ^= h >>> 16) >>> 0;
    };
    for (let i = 0; i < text.length; i++) {
      h = Math.imul(h ^ text.charCodeAt(i), 3432918353);
      h = (h << 13) | (h >>> 19);
    }
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    for (let i = 0; i < 15; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  float(): number {
    return this.u32() / 0x1_0000_0000;
  }

  int(n: number): number {
    if (!(n >= 1)) throw new RangeError(`Random.int: n must be ≥ 1, got ${n}`);
    return Math.floor(this.float() * n);
  }

  fork(): Random {
    return new SeededRandom(`${this.u32()}:${this.u32()}`);
  }
}

/** A generator seeded from the operating system, for real hosts. */
export function osRandom(): Random {
  return new SeededRandom(randomBytes(16).toString('hex'));
}
