// A JS SDK worker in a process of its own (the resilience tests SIGKILL it):
//   node worker.mjs HOST:PORT [activity delay ms]
// Prints "worker ready" once it is connected.
// With DTSD_TOKEN set it sends that token; with DTSD_TLS_CA it connects over TLS
// trusting that CA (bench/hello_cities --secure).
import { readFileSync } from "node:fs";

import { credentials, Metadata } from "@grpc/grpc-js";
import { NoOpLogger, TaskHubGrpcWorker } from "@microsoft/durabletask-js";

const [address, delayArg] = process.argv.slice(2);
const delayMs = Number(delayArg ?? 0);
const token = process.env.DTSD_TOKEN;
const ca = process.env.DTSD_TLS_CA;
const worker = new TaskHubGrpcWorker({
  hostAddress: address, logger: new NoOpLogger(), shutdownTimeoutMs: 1000,
  ...(ca ? { credentials: credentials.createSsl(readFileSync(ca)) } : {}),
  ...(token ? { metadataGenerator: async () => { const m = new Metadata(); m.set("authorization", `Bearer ${token}`); return m; } } : {}),
});
worker.addNamedActivity("SayHello", async (_ctx, city) => {
  if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  return `Hello, ${city}!`;
});
worker.addNamedOrchestrator("HelloCities", async function* (ctx) {
  const out = [];
  for (const city of ["Tokyo", "Seattle", "London", "Paris", "Cairo"]) out.push(yield ctx.callActivity("SayHello", city));
  return out;
});
await worker.start();
console.log("worker ready");
const stop = async () => { await worker.stop().catch(() => {}); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
