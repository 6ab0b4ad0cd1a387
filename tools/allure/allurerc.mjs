// Allure 3 configuration for the perf suite's report (used by scripts/allure-report.sh).
// History: Allure 3 keeps it in one JSON-lines file (historyPath), one line per generated report;
// the report's trend charts read it, and each generation appends the new run.
import { existsSync, readFileSync } from "node:fs";

const categoriesFile = process.env.ALLURE_CATEGORIES;
// Same rules as the categories.json in the results (written by the perf suite's pytest plugin), so the
// awesome report (which reads categories from its config) sorts failures as Allure 2 would.
const categories =
  categoriesFile && existsSync(categoriesFile) ? JSON.parse(readFileSync(categoriesFile, "utf-8")) : undefined;

export default {
  name: process.env.ALLURE_REPORT_NAME || "iris_pipeline perf",
  output: process.env.ALLURE_OUTPUT || "allure-report",
  historyPath: process.env.ALLURE_HISTORY || ".allure/history.jsonl",
  ...(process.env.ALLURE_HISTORY_LIMIT ? { historyLimit: Number(process.env.ALLURE_HISTORY_LIMIT) } : {}),
  ...(categories ? { categories } : {}),
  plugins: {
    awesome: { options: { singleFile: false, reportLanguage: "en" } },
  },
};
