// A JS SDK worker in a process of its own (the resilience tests SIGKILL it):
//   node worker.mjs HOST:PORT [activity delay ms]
// Prints "worker ready" once it is connected.
import { NoOpLogger, TaskHubGrpcWorker } from "@microsoft/durabletask-js";

const [address, delayArg] = process.argv.slice(2);
const delayMs = Number(delayArg ?? 0);
const worker = new TaskHubGrpcWorker({ hostAddress: address, logger: new NoOpLogger(), shutdownTimeoutMs: 1000 });
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
