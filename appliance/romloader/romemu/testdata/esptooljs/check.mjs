// check.mjs HOST PORT FILE ADDRESS: esptool-js connects to the emulated
// board at HOST:PORT as to a serial port, detects the chip, reads its
// MAC, uploads its flasher stub, writes FILE at ADDRESS (compressed, with
// its MD5 checked by the chip) and prints what it learned as JSON.
import net from "node:net";
import fs from "node:fs";
import crypto from "node:crypto";
import { ESPLoader, Transport } from "esptool-js";

// TCPSerialPort is the Web Serial SerialPort esptool-js expects, over a
// TCP connection (as ser2net's raw mode gives one).
class TCPSerialPort {
  constructor(host, port) {
    this.host = host;
    this.port = port;
    this.readable = null;
    this.writable = null;
    this.signals = [];
  }
  async open() {
    const sock = net.connect(this.port, this.host);
    await new Promise((ok, fail) => { sock.once("connect", ok); sock.once("error", fail); });
    sock.setNoDelay(true);
    this.sock = sock;
    this.readable = new ReadableStream({
      start(c) {
        sock.on("data", (d) => c.enqueue(new Uint8Array(d)));
        sock.on("end", () => { try { c.close(); } catch {} });
        sock.on("error", (e) => { try { c.error(e); } catch {} });
      },
    });
    this.writable = new WritableStream({
      write(chunk) { return new Promise((ok) => sock.write(chunk, ok)); },
    });
  }
  async close() {
    if (this.sock) this.sock.destroy();
    this.readable = null;
    this.writable = null;
  }
  async setSignals(s) { this.signals.push(s); } // a TCP line has no DTR/RTS
  async setBaudRate() {} // a TCP line has no baud rate: change it in place
  getInfo() { return { usbVendorId: 0x10c4, usbProductId: 0xea60 }; }
}

const [host, port, file, address] = process.argv.slice(2);
const lines = [];
const terminal = { clean() {}, writeLine(s) { lines.push(s); }, write(s) { lines.push(s); } };
const loader = new ESPLoader({
  transport: new Transport(new TCPSerialPort(host, Number(port)), false),
  baudrate: 460800,
  romBaudrate: 115200,
  terminal,
});
try {
  const description = await loader.main("default_reset");
  const mac = await loader.chip.readMac(loader);
  const data = new Uint8Array(fs.readFileSync(file));
  await loader.writeFlash({
    fileArray: [{ data, address: Number(address) }],
    flashMode: "keep", flashFreq: "keep", flashSize: "keep",
    eraseAll: false, compress: true,
    calculateMD5Hash: (img) => crypto.createHash("md5").update(img).digest("hex"),
  });
  console.log(JSON.stringify({ chip: loader.chip.CHIP_NAME, description, mac, stub: loader.IS_STUB, log: lines }));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.message || e), log: lines }));
  process.exit(1);
}
