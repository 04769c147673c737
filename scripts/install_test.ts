import assert from "node:assert/strict";
import { wrapperScript } from "./install.ts";

Deno.test("the wrapper passes its arguments through, whatever the paths hold", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry-install-" });
  try {
    // A stand-in for deno that prints the arguments it got, one a line.
    const fake = `${dir}/it's a "deno"`;
    await Deno.writeTextFile(fake, '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n', {
      mode: 0o755,
    });
    const wrapper = `${dir}/sentry`;
    await Deno.writeTextFile(
      wrapper,
      wrapperScript({ deno: fake, config: "/co/deno $x.json", main: "/co/main `x`.ts" }),
      { mode: 0o755 },
    );
    const out = await new Deno.Command(wrapper, {
      args: ["run", "--", "sh", "-c", "echo 'a b'", ""],
      stdout: "piped",
    }).output();
    assert.ok(out.success);
    assert.deepEqual(new TextDecoder().decode(out.stdout).split("\n").slice(0, -1), [
      "run",
      "-A",
      "--config",
      "/co/deno $x.json",
      "/co/main `x`.ts",
      "run",
      "--",
      "sh",
      "-c",
      "echo 'a b'",
      "",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
