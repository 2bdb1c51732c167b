// Raw protocol calls for the compat suite: the generated messages and stub of the
// official JS SDK's own protocol code, a unary call as a promise, and a work stream
// that collects what dtsd pushes. For tests of what an SDK would not send itself.
import { createRequire } from "node:module";

import { after, before } from "node:test";

import { credentials, Metadata } from "@grpc/grpc-js";

import { Dtsd, makeClient } from "./support.mjs";

const require = createRequire(import.meta.url);
export const pb = require("@microsoft/durabletask-js/dist/proto/orchestrator_service_pb.js");
export const services = require("@microsoft/durabletask-js/dist/proto/orchestrator_service_grpc_pb.js");
export const { StringValue } = require("google-protobuf/google/protobuf/wrappers_pb.js");
export const { Empty } = require("google-protobuf/google/protobuf/empty_pb.js");
export const { Timestamp } = require("google-protobuf/google/protobuf/timestamp_pb.js");
export const { Duration } = require("google-protobuf/google/protobuf/duration_pb.js");

export function unary(stub, method, request, metadata = new Metadata()) {
  return new Promise((resolve, reject) => stub[method](request, metadata, (error, response) => (error ? reject(error) : resolve(response))));
}

export function stringValue(text) {
  const value = new StringValue();
  value.setValue(text);
  return value;
}

/** Opens GetWorkItems and collects what arrives; `next(has)` waits for a matching item. */
export function openStream(stub, request = new pb.GetWorkItemsRequest()) {
  const stream = stub.getWorkItems(request, new Metadata());
  const items = [];
  const waiters = [];
  stream.on("data", (item) => {
    items.push(item);
    for (const w of waiters.splice(0)) w();
  });
  stream.on("error", () => {});
  return {
    stream,
    async next(has, ms = 20000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const index = items.findIndex(has);
        if (index >= 0) return items.splice(index, 1)[0];
        if (Date.now() > deadline) throw new Error("no work item arrived");
        await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
      }
    },
  };
}

/**
 * For a describe block: before it, a fresh dtsd with a raw stub and an SDK client;
 * after it, all stopped. The fields are set once `before` has run.
 */
export function rawEnvironment() {
  const env = {};
  before(async () => {
    env.dtsd = await new Dtsd().start();
    env.stub = new services.TaskHubSidecarServiceClient(env.dtsd.address, credentials.createInsecure());
    env.client = makeClient(env.dtsd);
  });
  after(async () => {
    env.stub?.close();
    await env.client?.stop().catch(() => {});
    await env.dtsd?.cleanup();
  });
  return env;
}
