// The engine's matrix tiles with a fused multiply-add (src/model/tiled_gemm.rs, `fused`).
// scripts/web-dist.mjs puts this file into each engine's loader and each thread's script.
//
// Relaxed SIMD's `f32x4.relaxed_madd` computes c + a·b in one instruction: on cores that multiply
// and add in the same pipes, the page's products run 1.26-1.31× as fast with it (an Intel VM,
// docs/results.md, stop 72). A module that uses it does not load in a browser without relaxed
// SIMD, so the kernel is a module of its own, built here, checked with WebAssembly.validate and
// used only where it validates. It reads and writes the engine's memory: it imports it, shared
// where the engine's is.
//
// The kernel, `tiles(a, b, kc, out, n)`: n tiles of one panel of b (`kc` runs of two vectors at
// b), each against the next panel of a (`kc` runs of six floats, the panels one after another
// from a); each tile's sums (six rows of two vectors) stored at out, 192 bytes a tile. One call
// for a row of tiles, not one per tile. Six rows: twelve sums, two vectors of b and a broadcast
// fit V8's sixteen vector registers. In the text format:
//
//   (loop $tile                                  ;; n >= 1
//     c[r][h] = 0;  p = kc;  bp = b
//     (block (br_if 0 (i32.eqz p))
//       (loop $p
//         b0 = v128.load (bp)   b1 = v128.load offset=16 (bp)
//         for r in 0..6:  s = v128.load32_splat offset=4r (a)
//                         c[r][h] = f32x4.relaxed_madd (b_h, s, c[r][h])    for h in 0, 1
//         a += 24   bp += 32   (br_if $p (p -= 1))))
//     for q in 0..12: v128.store offset=16q (out, c[q / 2][q % 2])
//     out += 192   (br_if $tile (n -= 1)))
//
// as src/model/tiled_gemm.rs packs them for it (`FR` = 6 rows of a).

/** The kernel module's bytes; `shared`: the engine's memory is shared (the threaded build). */
function alignlabTileModule(shared) {
  const leb = (n) => (n < 128 ? [n] : [(n & 0x7f) | 0x80, ...leb(n >> 7)]);
  // i32.const takes a signed LEB128: one byte holds -64..63, two up to 8191.
  const i32 = (n) => (n >= -64 && n < 64 ? [0x41, n & 0x7f] : [0x41, (n & 0x7f) | 0x80, (n >> 7) & 0x7f]);
  const simd = (op) => (op < 128 ? [0xfd, op] : [0xfd, (op & 0x7f) | 0x80, op >> 7]);
  const V128_LOAD = 0x00, V128_LOAD32_SPLAT = 0x09, V128_CONST = 0x0c, V128_STORE = 0x0b, RELAXED_MADD = 0x105;
  const I32_ADD = 0x6a, I32_SUB = 0x6b, I32_EQZ = 0x45, BLOCK = 0x02, LOOP = 0x03, BR_IF = 0x0d, END = 0x0b, VOID = 0x40;
  const get = (i) => [0x20, i], set = (i) => [0x21, i], tee = (i) => [0x22, i];
  const R = 6; // rows of a a tile takes
  // Locals: the parameters, two i32 (p, bp), fifteen v128 (the sums c[r][h] at C + 2r + h, b0, b1, s).
  const [A, B, KC, OUT, N, P, BP, C] = [0, 1, 2, 3, 4, 5, 6, 7];
  const B0 = C + 2 * R, S = B0 + 2;
  const c = (r, h) => C + 2 * r + h;
  const body = [2, 2, 0x7f, 2 * R + 3, 0x7b, LOOP, VOID];
  for (let q = 0; q < 2 * R; q++) body.push(...simd(V128_CONST), ...Array(16).fill(0), ...set(C + q));
  body.push(...get(KC), ...set(P), ...get(B), ...set(BP), BLOCK, VOID, ...get(P), I32_EQZ, BR_IF, 0, LOOP, VOID);
  body.push(...get(BP), ...simd(V128_LOAD), 4, 0, ...set(B0), ...get(BP), ...simd(V128_LOAD), 4, 16, ...set(B0 + 1));
  for (let r = 0; r < R; r++) {
    body.push(...get(A), ...simd(V128_LOAD32_SPLAT), 2, 4 * r, ...set(S));
    for (let h = 0; h < 2; h++) body.push(...get(B0 + h), ...get(S), ...get(c(r, h)), ...simd(RELAXED_MADD), ...set(c(r, h)));
  }
  body.push(...get(A), ...i32(4 * R), I32_ADD, ...set(A), ...get(BP), ...i32(32), I32_ADD, ...set(BP));
  body.push(...get(P), ...i32(1), I32_SUB, ...tee(P), BR_IF, 0, END, END);
  for (let q = 0; q < 2 * R; q++) body.push(...get(OUT), ...get(C + q), ...simd(V128_STORE), 4, ...leb(16 * q));
  body.push(...get(OUT), ...i32(32 * R), I32_ADD, ...set(OUT));
  body.push(...get(N), ...i32(1), I32_SUB, ...tee(N), BR_IF, 0, END, END);
  const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
  const name = (s) => [s.length, ...[...s].map((ch) => ch.charCodeAt(0))];
  // Shared memory must say its maximum: the threaded build's own, 4 GiB (65536 pages).
  const memory = shared ? [0x03, 0, ...leb(65536)] : [0x00, 0];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, [1, 0x60, 5, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0]),
    ...section(2, [1, ...name('m'), ...name('memory'), 0x02, ...memory]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...name('tiles'), 0x00, 0]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]);
}

/** Puts the fused kernel into the engine's table slot for it (`wasm`: the engine instance's
 * exports); `main`: the engine's own instance, which then turns it on for every thread (a thread
 * of the pool only fills its own table). Returns whether the kernel is in; false where the browser
 * has no relaxed SIMD, and the products keep their plain tiles. */
function alignlabFuse(wasm, main) {
  try {
    // Not `instanceof SharedArrayBuffer`: that global is hidden where the page is not
    // cross-origin isolated, though the threaded build's memory is shared there too.
    const shared = Object.prototype.toString.call(wasm.memory.buffer) === '[object SharedArrayBuffer]';
    const bytes = alignlabTileModule(shared);
    if (!WebAssembly.validate(bytes)) return false;
    const kernel = new WebAssembly.Instance(new WebAssembly.Module(bytes), { m: { memory: wasm.memory } });
    wasm.__indirect_function_table.set(wasm.alignlab_tile_slot(), kernel.exports.tiles);
    if (main) wasm.alignlab_tile_fused();
    return true;
  } catch (e) {
    // The plain tiles are right, only slower: say why in the console and go on.
    console.warn('alignlab: the products run without a fused multiply-add:', e);
    return false;
  }
}
