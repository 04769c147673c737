import { formatAlert } from "../respond/mod.ts";
import type { Notice } from "../session/mod.ts";
import { measuredText } from "./cells.ts";
import { eprintJson, eprintln, paint } from "./output.ts";

/**
 * Prints what a watching session reports, on stderr (the agent owns stdout): an alert line per
 * event that got a response, a line per response taken, and warnings. With `json`, each is one
 * JSON object on its own line.
 */
export function printNotice(notice: Notice, options: { json: boolean }): void {
  if (options.json) {
    if (notice.type === "event") eprintJson({ type: "alert", ...notice.event });
    else if (notice.type === "response") {
      eprintJson({
        type: "response",
        action: notice.action,
        outcome: notice.outcome,
        message: notice.message,
        event: notice.event?.id ?? null,
        session: notice.event?.session ?? null,
      });
    } else eprintJson({ type: notice.type, message: notice.message });
    return;
  }
  switch (notice.type) {
    case "event": {
      // A resource alert says what it measured: the CPU percentage or memory, and for how long.
      const measured = notice.event.kind.startsWith("resource.")
        ? measuredText(notice.event.detail)
        : "";
      eprintln(formatAlert(notice.event, paint) + (measured === "" ? "" : `; measured${measured}`));
      break;
    }
    case "response":
      eprintln(paint(`sentry: ${notice.message}`, notice.outcome === "ok" ? "yellow" : "red"));
      break;
    case "warn":
      eprintln(paint(`sentry: warning: ${notice.message}`, "yellow"));
      break;
    case "info":
      eprintln(paint(`sentry: ${notice.message}`, "dim"));
      break;
  }
}
