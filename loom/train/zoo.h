// Models by name, or from a job file's [[model.layers]] list.
//
//   // given: const io::JobConfig& job, Tensor images
//   auto model = train::build_model(job.model, {1, 28, 28}, 10);   // mlp | cnn | lenet | resnet18 | gpt
//   auto logits = (*model)(images);                                 // [N, 10]
//   auto lm = train::gpt({.vocab = 256, .context = 128, .blocks = 4, .heads = 4, .embed = 128});
//   // tokens i64 [B, T] -> logits [B, T, 256]; a job's [model] name = "gpt" gets the same from build_model
//
// Layer lists infer input sizes (a linear layer's `in`, a conv's `in`, a
// norm's features) from the shape flowing in, and an error names the layer,
// where it was written, and both shapes.
#pragma once

#include <memory>

#include "loom/core/shape.h"
#include "loom/io/config.h"
#include "loom/nn/module.h"
#include "loom/nn/transformer.h"

namespace loom::train {

// `input` is one example's shape (C, H, W); the model ends in `num_classes` logits.
// For gpt, `num_classes` is the vocabulary (256 for bytes) and the job's
// context, blocks, heads, embed, mlp_ratio, dropout and tied set the rest.
std::shared_ptr<nn::Module> build_model(const io::ModelConfig& config, const core::Shape& input, int64_t num_classes);

// The zoo models on their own.
std::shared_ptr<nn::Module> mlp(const core::Shape& input, int64_t num_classes);
std::shared_ptr<nn::Module> cnn(const core::Shape& input, int64_t num_classes);
std::shared_ptr<nn::Module> lenet(const core::Shape& input, int64_t num_classes);
// ResNet-18 in the CIFAR style (3x3 stem, no initial max-pool), for small images.
std::shared_ptr<nn::Module> resnet18(const core::Shape& input, int64_t num_classes);
// A GPT-style decoder (nn/transformer.h): the embedding, `blocks` pre-norm
// causal blocks and the head, as ordered parts for pipeline placement.
std::shared_ptr<nn::Gpt> gpt(const nn::GptOptions& options);

}  // namespace loom::train
