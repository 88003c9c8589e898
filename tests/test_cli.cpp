// CLI tests: defaults, the checks on every flag, --help naming every flag, prompt sources.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "mdi/cli.h"
#include "mdi/error.h"

namespace {

mdi::ParseResult parse(std::vector<const char*> args) {
  args.insert(args.begin(), "mdi-llm");
  return mdi::parse_cli(int(args.size()), args.data());
}

TEST(Cli, Defaults) {
  mdi::ParseResult r = parse({"--model", "m.h5"});
  ASSERT_FALSE(r.exit) << r.message;
  EXPECT_EQ(r.options.model, "m.h5");
  EXPECT_EQ(r.options.samples, 0);
  EXPECT_EQ(r.options.tokens, 200);
  EXPECT_EQ(r.options.threads, 0);
  EXPECT_TRUE(r.options.layers.empty());
  EXPECT_EQ(r.options.head_split, -1);  // auto
  EXPECT_FALSE(r.options.crop_prompts);
  EXPECT_FALSE(r.options.stream);
}

// Without --model, the bundled model of this source tree (which the tests' build has).
TEST(Cli, ModelDefaultsToTheBundledOne) {
  mdi::ParseResult r = parse({"--prompt", "x"});
  ASSERT_FALSE(r.exit) << r.message;
  EXPECT_EQ(r.options.model, mdi::bundled_model());
  EXPECT_TRUE(std::filesystem::is_regular_file(r.options.model)) << r.options.model;
  EXPECT_EQ(std::filesystem::path(r.options.model).filename(), "shakespeare_char.h5");
}

// A build-tree executable has no installed data folder beside it: the source tree's path
// (install_tree.sh covers an installed tree).
TEST(Cli, ShippedFilesOutsideAnInstalledTreeAreTheSourceTrees) {
  EXPECT_EQ(mdi::shipped_file("shakespeare_char.h5", "/src/data/x.h5"), "/src/data/x.h5");
}

TEST(Cli, VersionIsTheProjects) {
  mdi::ParseResult r = parse({"--version"});
  EXPECT_TRUE(r.exit);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.message, std::string("mdi-llm ") + MDI_VERSION + "\n");
}

TEST(Cli, ParsesEverything) {
  mdi::ParseResult r = parse({"--model", "m.h5", "--prompt", "a", "--prompt", "b", "--samples", "5",
                              "--tokens", "7", "--temperature", "0", "--top-k", "3", "--top-p", "0.5",
                              "--seed", "9", "--layers", "0,2,2", "--head-split", "123", "--threads", "2",
                              "--micro-batches", "2", "--output", "o.jsonl", "--timings", "t.csv", "--crop-prompts", "-vv"});
  ASSERT_FALSE(r.exit) << r.message;
  const mdi::Options& o = r.options;
  EXPECT_EQ(o.prompts, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(o.samples, 5);
  EXPECT_EQ(o.tokens, 7);
  EXPECT_EQ(o.sampling.temperature, 0.0f);
  EXPECT_EQ(o.sampling.top_k, 3);
  EXPECT_EQ(o.sampling.top_p, 0.5f);
  EXPECT_EQ(o.sampling.seed, 9u);
  EXPECT_EQ(o.layers, "0,2,2");
  EXPECT_EQ(o.head_split, 123);
  EXPECT_EQ(parse({"--model", "m", "--head-split", "auto"}).options.head_split, -1);
  EXPECT_EQ(parse({"--model", "m", "--head-split", "0"}).options.head_split, 0);
  EXPECT_EQ(o.threads, 2);
  EXPECT_EQ(o.micro_batches, 2);
  EXPECT_EQ(o.output, "o.jsonl");
  EXPECT_EQ(o.timings, "t.csv");
  EXPECT_TRUE(o.crop_prompts);
  EXPECT_TRUE(parse({"--model", "m", "--stream"}).options.stream);
  EXPECT_EQ(o.verbose, 2);
}

TEST(Cli, RefusesBadValues) {
  for (auto args : std::vector<std::vector<const char*>>{
           {"--model", "m", "--samples", "0"},
           {"--model", "m", "--tokens", "-1"},
           {"--model", "m", "--top-p", "1.5"},
           {"--model", "m", "--top-p", "0"},
           {"--model", "m", "--temperature", "-1"},
           {"--model", "m", "--top-k", "-2"},
           {"--model", "m", "--threads", "0"},
           {"--model", "m", "--micro-batches", "0"},
           {"--model", "m", "--head-split", "-1"},
           {"--model", "m", "--head-split", "1e3"},
           {"--model", "m", "--head-split", "99999999999"},
           {"--model", "m", "--head-split", ""},
           {"--model", "m", "--samples", "three"},
           {"--model", "m", "--seed", "-5"},                     // would wrap to 2^64 - 5
           {"--model", "m", "--seed", "0x10"},
           {"--model", "m", "--seed", "99999999999999999999"},   // would saturate
           {"--model", "m", "--tokens", "0x10"},
           {"--model", "m", "--tokens", "+5"},
           {"--model", "m", "--threads", "1025"},
           {"--model", "m", "--bogus"},
           {"--model", "m", "--tokens"}}) {
    mdi::ParseResult r = parse(args);
    EXPECT_TRUE(r.exit && r.exit_code == 1) << args.back();
    EXPECT_NE(r.message.find("error"), std::string::npos) << r.message;
  }
}

// Integers are decimal: CLI11 alone would read "010" as octal 8.
TEST(Cli, IntegersAreDecimal) {
  const mdi::Options o =
      parse({"--model", "m", "--tokens", "010", "--seed", "0010", "--top-k", "0", "--samples", "09"}).options;
  EXPECT_EQ(o.tokens, 10);
  EXPECT_EQ(o.sampling.seed, 10u);
  EXPECT_EQ(o.sampling.top_k, 0);
  EXPECT_EQ(o.samples, 9);
  EXPECT_EQ(parse({"--model", "m", "--seed", "9999999999999999999"}).options.sampling.seed,
            9999999999999999999u);
}

// A mode that would ignore a flag refuses it: --eval generates nothing, --tokenize and
// --detokenize run no model.
TEST(Cli, RefusesContradictoryFlags) {
  for (auto args :
       std::vector<std::vector<const char*>>{{"--tokenize", "--detokenize"},
                                             {"--tokenize", "--eval", "t.txt"},
                                             {"--tokenize", "--prompt", "x"},
                                             {"--detokenize", "--samples", "3"},
                                             {"--detokenize", "--output", "o.jsonl"},
                                             {"--eval", "t.txt", "--prompt", "x"},
                                             {"--eval", "t.txt", "--tokens", "5"},
                                             {"--eval", "t.txt", "--temperature", "0.5"},
                                             {"--eval", "t.txt", "--output", "o.jsonl"},
                                             {"--eval", "t.txt", "--report-json", "r.json"},
                                             {"--eval", "t.txt", "--stream"},
                                             {"--tokenize", "--stream"}}) {
    std::vector<const char*> argv{"--model", "m"};
    argv.insert(argv.end(), args.begin(), args.end());
    mdi::ParseResult r = parse(argv);
    EXPECT_TRUE(r.exit && r.exit_code == 1) << args[0] << " " << args.back();
    EXPECT_NE(r.message.find("excludes"), std::string::npos) << r.message;
  }
  for (auto args : std::vector<std::vector<const char*>>{
           {"--model", "m", "--eval", "t.txt", "--samples", "4", "--layers", "0,2,2", "--micro-batches", "2"},
           {"--model", "m", "--tokenize", "--threads", "2"}})
    EXPECT_FALSE(parse(args).exit) << args[2];
}

TEST(Cli, HelpNamesEveryFlag) {
  mdi::ParseResult r = parse({"--help"});
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag :
       {"--model", "--prompt", "--prompts-file", "--samples", "--tokens", "--temperature",
        "--top-k", "--top-p", "--seed", "--layers", "--head-split", "--threads", "--micro-batches",
        "--crop-prompts", "--output", "--timings", "--stream", "--verbose"})
    EXPECT_NE(r.message.find(flag), std::string::npos) << flag;
  EXPECT_NE(r.message.find("btl_vader_eager_limit"), std::string::npos);  // the transport default
}

TEST(Cli, PromptsFromFileLinesAndJsonl) {
  auto path = std::filesystem::temp_directory_path() / "mdi-prompts.txt";
  {
    std::ofstream f(path);
    f << "plain line\r\n\n{\"prompt\": \"two\\nlines\"}\n  \nlast";
  }
  mdi::Options o;
  o.prompts = {"first"};
  o.prompts_file = path.string();
  EXPECT_EQ(mdi::collect_prompts(o), (std::vector<std::string>{"first", "plain line", "two\nlines", "last"}));

  { std::ofstream f(path); f << "{\"text\": \"no prompt field\"}\n"; }
  EXPECT_THROW(mdi::collect_prompts(o), mdi::UserError);
  { std::ofstream f(path); f << "{not json\n"; }
  EXPECT_THROW(mdi::collect_prompts(o), mdi::UserError);
  o.prompts_file = "/nonexistent/prompts.txt";
  EXPECT_THROW(mdi::collect_prompts(o), mdi::UserError);
}

TEST(Cli, DefaultAndEmptyPrompts) {
  mdi::Options o;
  EXPECT_EQ(mdi::collect_prompts(o), (std::vector<std::string>{"\n"}));
  o.prompts = {""};
  EXPECT_THROW(mdi::collect_prompts(o), mdi::UserError);
}

}  // namespace
