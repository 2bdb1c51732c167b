// TLS on the gRPC endpoint, the native API and the dashboard (--tls-cert/--tls-key,
// --tls-client-ca): the official JS SDK runs hello cities over https with a test CA,
// the C++ SDK's hello cities and dtsctl over the native API's TLS; a client that trusts
// another CA, a plaintext client, an expired certificate and (with mTLS) a client
// without a certificate are each refused; files that do not fit stop dtsd at
// start with a message naming them. The certificates are made here with openssl.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";

import { credentials, Metadata, status as grpcStatus } from "@grpc/grpc-js";
import { NoOpLogger, OrchestrationStatus, TaskHubGrpcClient, TaskHubGrpcWorker } from "@microsoft/durabletask-js";

import { Empty, services } from "./raw.mjs";
import { CITIES, Dtsd, dtsdPath } from "./support.mjs";

const dtsctlPath = process.env.DTSCTL_BIN ?? resolve(dirname(dtsdPath), "../cli/dtsctl");
const helloPath = process.env.HELLO_BIN ?? resolve(dirname(dtsdPath), "../../samples/hello_cities/hello_cities");

let dir;
const file = (name) => join(dir, name);
const openssl = (...args) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });

function makeCa(name) {
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", file(`${name}.key`), "-out", file(`${name}.pem`),
          "-days", "2", "-subj", `/CN=${name}`);
}
/** A certificate signed by `ca`, for 127.0.0.1 and localhost; `days` 0: expired a second later. */
function makeCert(name, ca, days = 1) {
  openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", file(`${name}.key`), "-out", file(`${name}.csr`),
          "-subj", `/CN=${name}`);
  writeFileSync(file(`${name}.ext`), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  openssl("x509", "-req", "-in", file(`${name}.csr`), "-CA", file(`${ca}.pem`), "-CAkey", file(`${ca}.key`),
          "-CAcreateserial", "-out", file(`${name}.pem`), "-days", String(days), "-extfile", file(`${name}.ext`));
}

const read = (name) => readFileSync(file(name));
const trusting = (ca, client) => client
  ? credentials.createSsl(read(`${ca}.pem`), read(`${client}.key`), read(`${client}.pem`))
  : credentials.createSsl(read(`${ca}.pem`));

/** Hello over `channel`: its status code (0: it went through), with a 3 s deadline. */
function hello(address, channel) {
  const stub = new services.TaskHubSidecarServiceClient(address, channel);
  return new Promise((done) => stub.hello(new Empty(), new Metadata(), { deadline: Date.now() + 3000 }, (error) => {
    stub.close();
    done(error ? { code: error.code, details: error.details } : { code: 0 });
  }));
}

/** GET over https from the dashboard: { status } or { error } (a refused handshake). */
function dashboardGet(dtsd, path, { ca, client } = {}) {
  return new Promise((done) => {
    const request = httpsRequest({
      host: "127.0.0.1", port: dtsd.dashboardPort, path, method: "GET", timeout: 3000,
      ...(ca ? { ca: read(`${ca}.pem`) } : {}),
      ...(client ? { key: read(`${client}.key`), cert: read(`${client}.pem`) } : {}),
    }, (response) => {
      response.resume();
      response.on("end", () => done({ status: response.statusCode }));
    });
    request.on("timeout", () => request.destroy(new Error("timed out")));
    request.on("error", (error) => done({ error: error.message }));
    request.end();
  });
}

async function withDtsd(args, run) {
  const dtsd = await new Dtsd({ extraArgs: args }).start();
  try {
    await run(dtsd);
  } finally {
    await dtsd.cleanup();
  }
}

/** dtsctl against the native API of `dtsd` at `host` (localhost: a name the certificate carries). */
function dtsctl(dtsd, args, { host = "localhost" } = {}) {
  const ran = spawnSync(dtsctlPath, ["--address", `${host}:${dtsd.nativePort}`, ...args],
                        { encoding: "utf8", timeout: 15000 });
  return { code: ran.status, out: ran.stdout, err: ran.stderr };
}

/** hello_cities (the C++ SDK) over the native API's TLS: a worker and a client of `count`. */
async function nativeHello(dtsd, tlsArgs, count = 3) {
  const address = `localhost:${dtsd.nativePort}`;
  const worker = spawn(helloPath, ["worker", "--address", address, ...tlsArgs], { stdio: "ignore" });
  try {
    const client = spawnSync(helloPath, ["client", "--address", address, "--count", String(count), ...tlsArgs],
                             { encoding: "utf8", timeout: 30000 });
    return { code: client.status, out: client.stdout + client.stderr };
  } finally {
    worker.kill("SIGKILL");
  }
}

describe("tls: the gRPC endpoint, the native API and the dashboard", () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "dtsd-tls-"));
    makeCa("ca");
    makeCa("other-ca");
    makeCert("server", "ca");
    makeCert("client", "ca");
    makeCert("expired", "ca", 0);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("the JS SDK runs hello cities over TLS; another CA, plaintext and an expired certificate are refused", async () => {
    await withDtsd(["--tls-cert", file("server.pem"), "--tls-key", file("server.key")], async (dtsd) => {
      const channel = trusting("ca");
      const worker = new TaskHubGrpcWorker({ hostAddress: dtsd.address, credentials: channel, logger: new NoOpLogger(),
                                             shutdownTimeoutMs: 2000 });
      worker.addNamedActivity("SayHello", async (_ctx, city) => `Hello, ${city}!`);
      worker.addNamedOrchestrator("HelloCities", async function* (ctx) {
        const out = [];
        for (const city of CITIES) out.push(yield ctx.callActivity("SayHello", city));
        return out;
      });
      await worker.start();
      const client = new TaskHubGrpcClient({ hostAddress: dtsd.address, credentials: channel, logger: new NoOpLogger() });
      try {
        const id = await client.scheduleNewOrchestration("HelloCities");
        const state = await client.waitForOrchestrationCompletion(id, true, 30);
        assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
        assert.deepEqual(JSON.parse(state.serializedOutput), CITIES.map((c) => `Hello, ${c}!`));
      } finally {
        await worker.stop();
        await client.stop();
      }
      assert.equal((await hello(dtsd.address, trusting("ca"))).code, 0);
      const wrongCa = await hello(dtsd.address, trusting("other-ca"));
      assert.equal(wrongCa.code, grpcStatus.UNAVAILABLE);
      const plain = await hello(dtsd.address, credentials.createInsecure());
      assert.notEqual(plain.code, 0, "a plaintext client gets nothing from a TLS port");
      // The dashboard: the same certificate.
      assert.equal((await dashboardGet(dtsd, "/healthz", { ca: "ca" })).status, 200);
      assert.match((await dashboardGet(dtsd, "/healthz", { ca: "other-ca" })).error ?? "", /certificate/);
      const plainHttp = await fetch(`http://127.0.0.1:${dtsd.dashboardPort}/healthz`).then((r) => r.status, (e) => e.message);
      assert.notEqual(plainHttp, 200, "plain HTTP gets nothing from the TLS dashboard");
      // The native API: the C++ SDK and dtsctl with the CA; the refusals say why.
      const native = await nativeHello(dtsd, ["--tls-ca", file("ca.pem")]);
      assert.equal(native.code, 0, native.out);
      assert.match(native.out, /"correct":3/);
      const listed = dtsctl(dtsd, ["--tls-ca", file("ca.pem"), "taskhub", "list"]);
      assert.equal(listed.code, 0, listed.err);
      assert.match(listed.out, /default/);
      const plainNative = dtsctl(dtsd, ["taskhub", "list"]);
      assert.equal(plainNative.code, 1);
      assert.match(plainNative.err, /closed the connection at once.*--tls-ca/);
      const otherCa = dtsctl(dtsd, ["--tls-ca", file("other-ca.pem"), "taskhub", "list"]);
      assert.equal(otherCa.code, 1);
      assert.match(otherCa.err, /TLS handshake .* failed: .*not trusted/);
      const byIp = dtsctl(dtsd, ["--tls-ca", file("ca.pem"), "taskhub", "list"], { host: "127.0.0.1" });
      assert.equal(byIp.code, 1);
      assert.match(byIp.err, /DNS names, not IP addresses/);
      const named = dtsctl(dtsd, ["--tls-ca", file("ca.pem"), "--tls-server-name", "localhost", "taskhub", "list"],
                           { host: "127.0.0.1" });
      assert.equal(named.code, 0, named.err);
    });
    await withDtsd(["--tls-cert", file("expired.pem"), "--tls-key", file("expired.key")], async (dtsd) => {
      await new Promise((r) => setTimeout(r, 1100));  // Past its notAfter.
      assert.equal((await hello(dtsd.address, trusting("ca"))).code, grpcStatus.UNAVAILABLE);
      assert.match((await dashboardGet(dtsd, "/healthz", { ca: "ca" })).error ?? "", /expired/);
      const expiredNative = dtsctl(dtsd, ["--tls-ca", file("ca.pem"), "taskhub", "list"]);
      assert.equal(expiredNative.code, 1);
      assert.match(expiredNative.err, /expired/);
    });
  });

  test("SIGHUP: the dashboard and the native API take a renewed certificate; gRPC's is read again within seconds", async () => {
    copyFileSync(file("server.pem"), file("live.pem"));
    copyFileSync(file("server.key"), file("live.key"));
    makeCert("renewed", "other-ca");
    await withDtsd(["--tls-cert", file("live.pem"), "--tls-key", file("live.key")], async (dtsd) => {
      assert.equal((await dashboardGet(dtsd, "/healthz", { ca: "ca" })).status, 200);
      copyFileSync(file("renewed.key"), file("live.key"));
      copyFileSync(file("renewed.pem"), file("live.pem"));
      dtsd.child.kill("SIGHUP");
      let renewed = false;
      for (let i = 0; i < 50 && !renewed; ++i) {
        await new Promise((r) => setTimeout(r, 100));
        renewed = (await dashboardGet(dtsd, "/healthz", { ca: "other-ca" })).status === 200;
      }
      assert.ok(renewed, "the dashboard serves the renewed certificate");
      let grpcRenewed = false;
      for (let i = 0; i < 40 && !grpcRenewed; ++i) {
        await new Promise((r) => setTimeout(r, 250));
        grpcRenewed = (await hello(dtsd.address, trusting("other-ca"))).code === 0;
      }
      assert.ok(grpcRenewed, "gRPC serves the renewed certificate");
      const nativeRenewed = dtsctl(dtsd, ["--tls-ca", file("other-ca.pem"), "taskhub", "list"]);
      assert.equal(nativeRenewed.code, 0, `the native API serves the renewed certificate: ${nativeRenewed.err}`);
      // A file that does not fit is refused and the served certificate stays.
      writeFileSync(file("live.pem"), "not a certificate\n");
      dtsd.child.kill("SIGHUP");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await dashboardGet(dtsd, "/healthz", { ca: "other-ca" })).status, 200);
      assert.equal(dtsctl(dtsd, ["--tls-ca", file("other-ca.pem"), "taskhub", "list"]).code, 0);
      assert.match(dtsd.stdout + dtsd.stderr, /native API's TLS files were not reloaded/);
      assert.equal(dtsd.child.exitCode, null, "dtsd is still running");
    });
  });

  test("mTLS: a client certificate signed by --tls-client-ca is needed", async () => {
    await withDtsd(["--tls-cert", file("server.pem"), "--tls-key", file("server.key"),
                    "--tls-client-ca", file("ca.pem")], async (dtsd) => {
      assert.equal((await hello(dtsd.address, trusting("ca", "client"))).code, 0);
      assert.equal((await hello(dtsd.address, trusting("ca"))).code, grpcStatus.UNAVAILABLE);
      assert.equal((await dashboardGet(dtsd, "/healthz", { ca: "ca", client: "client" })).status, 200);
      assert.ok((await dashboardGet(dtsd, "/healthz", { ca: "ca" })).error, "no client certificate, no answer");
      const withCert = dtsctl(dtsd, ["--tls-ca", file("ca.pem"), "--tls-client-cert", file("client.pem"),
                                     "--tls-client-key", file("client.key"), "taskhub", "list"]);
      assert.equal(withCert.code, 0, withCert.err);
      const withoutCert = dtsctl(dtsd, ["--tls-ca", file("ca.pem"), "taskhub", "list"]);
      assert.equal(withoutCert.code, 1, "no client certificate, no native API");
      const otherClient = dtsctl(dtsd, ["--tls-ca", file("ca.pem"), "--tls-client-cert", file("renewed.pem"),
                                        "--tls-client-key", file("renewed.key"), "taskhub", "list"]);
      assert.equal(otherClient.code, 1, "a client certificate another CA signed is refused");
    });
  });

  test("files that do not fit stop dtsd at start, naming them", async () => {
    const refusals = [
      [["--tls-cert", file("server.pem")], /--tls-cert and --tls-key go together/],
      [["--tls-cert", file("missing.pem"), "--tls-key", file("server.key")], /--tls-cert .*missing\.pem: cannot be read/],
      [["--tls-cert", file("server.pem"), "--tls-key", file("client.key")], /--tls-key .*client\.key: is not the key of the certificate/],
      [["--tls-cert", file("server.key"), "--tls-key", file("server.key")], /--tls-cert .*server\.key: no PEM certificate/],
      [["--tls-client-ca", file("ca.pem")], /--tls-client-ca needs --tls-cert and --tls-key/],
    ];
    for (const [args, message] of refusals) {
      const dtsd = new Dtsd({ extraArgs: args });
      await assert.rejects(dtsd.start(), message);
      await dtsd.cleanup();  // Its data directory.
    }
  });
});
