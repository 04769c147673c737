/** Crockford's base32 alphabet, as ULIDs use it. */
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** What an id generator reads: injected so tests are deterministic. */
export interface UlidSources {
  /** Milliseconds since the epoch. */
  now: () => number;
  /** Fills the array with random bytes. */
  random: (bytes: Uint8Array) => void;
}

/**
 * Returns a generator of ULIDs: 26 characters, sortable by time, and strictly increasing
 * within one generator even when the clock stands still or steps back.
 */
export function createUlid(sources: Partial<UlidSources> = {}): () => string {
  const now = sources.now ?? Date.now;
  const random = sources.random ?? ((b: Uint8Array) => crypto.getRandomValues(b));
  let lastTime = -1;
  const entropy = new Uint8Array(10);
  return () => {
    // A clock such as `performance.timeOrigin + performance.now()` has fractions of a ms.
    let time = Math.floor(now());
    if (time <= lastTime) {
      time = lastTime;
      increment(entropy);
    } else {
      lastTime = time;
      random(entropy);
    }
    return encodeTime(time) + encodeEntropy(entropy);
  };
}

function increment(bytes: Uint8Array): void {
  for (let i = bytes.length - 1; i >= 0; i--) {
    const next = (bytes[i] ?? 0) + 1;
    bytes[i] = next & 0xff;
    if (next <= 0xff) return;
  }
  throw new RangeError("ULID entropy overflow within one millisecond");
}

function encodeTime(time: number): string {
  let out = "";
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[time % 32] + out;
    time = Math.floor(time / 32);
  }
  return out;
}

function encodeEntropy(bytes: Uint8Array): string {
  // 80 bits as 16 base32 digits, most significant first.
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const byte of bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(acc >> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

/** The time, in milliseconds since the epoch, that a ULID encodes. */
export function ulidTime(id: string): number {
  let time = 0;
  for (const ch of id.slice(0, 10)) time = time * 32 + ALPHABET.indexOf(ch);
  return time;
}
