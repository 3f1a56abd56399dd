/** Types for heic-decode (it ships none): libheif's decoder, as its README documents it. */
declare module 'heic-decode' {
  interface DecodedImage {
    width: number;
    height: number;
    data: Uint8ClampedArray;
  }
  /** An image of the file, its size known before its pixels are decoded. */
  interface LazyImage {
    width: number;
    height: number;
    decode(): Promise<DecodedImage>;
  }
  function decode(options: { buffer: Uint8Array | ArrayBuffer }): Promise<DecodedImage>;
  namespace decode {
    function all(options: { buffer: Uint8Array | ArrayBuffer }): Promise<LazyImage[]>;
  }
  export default decode;
}
