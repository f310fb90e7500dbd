// capture_producer.cpp — a capture-style producer: synthetic RGB frames (a
// moving gradient) written straight into shared memory at a set rate. Each
// frame carries its descriptor: a (height, width, 3) uint8 image, format
// "RGB", rows padded to 64 bytes (the row stride); the channel declares the
// payload type "image/rgb8" v1. Any bips consumer reads the frame from that
// alone: NumPy's np.asarray(sample) is the (height, width, 3) array,
// bips::Sample::view<uint8_t, 3>() in C++, Sample::view::<u8>() in Rust.
//
//   capture_producer CHANNEL [--width 1280] [--height 720] [--fps 30]
//                    [--frames 0 (forever)] [--policy drop-oldest|block]
//                    [--wait-consumers 0]
//
// A real capture program (V4L2, GStreamer appsink, a camera SDK) does the same
// with its DMA/memcpy into frame.data() instead of the gradient loop.
#include <bips/bips.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

static volatile std::sig_atomic_t stop = 0;

// The moving gradient: R follows x, G follows y, B the diagonal; all shift with t.
static void draw(uint8_t* img, uint32_t w, uint32_t h, uint32_t stride, uint32_t t) {
    for (uint32_t y = 0; y < h; y++) {
        uint8_t* row = img + static_cast<size_t>(y) * stride;
        for (uint32_t x = 0; x < w; x++) {
            row[3 * x + 0] = static_cast<uint8_t>(x + t);
            row[3 * x + 1] = static_cast<uint8_t>(y + 2 * t);
            row[3 * x + 2] = static_cast<uint8_t>(x + y + 3 * t);
        }
        std::memset(row + 3 * w, 0, stride - 3 * w);  // row padding
    }
}

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s CHANNEL [--width W] [--height H] [--fps F] [--frames N] "
                             "[--policy drop-oldest|block] [--wait-consumers K]\n", argv[0]);
        return 2;
    }
    const std::string channel = argv[1];
    uint32_t width = 1280, height = 720, frames = 0, wait_consumers = 0;
    double fps = 30;
    bool block = false;
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "--width") width = std::strtoul(next(), nullptr, 10);
        else if (a == "--height") height = std::strtoul(next(), nullptr, 10);
        else if (a == "--fps") fps = std::strtod(next(), nullptr);
        else if (a == "--frames") frames = std::strtoul(next(), nullptr, 10);
        else if (a == "--wait-consumers") wait_consumers = std::strtoul(next(), nullptr, 10);
        else if (a == "--policy") block = std::string(next()) == "block";
        else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
    }
    if (width == 0 || height == 0 || fps <= 0) {
        std::fprintf(stderr, "width, height and fps must be positive\n");
        return 2;
    }
    const uint32_t stride = (width * 3 + 63) / 64 * 64;  // rows 64-byte aligned, as many ISPs do
    const size_t frame_bytes = static_cast<size_t>(stride) * height;
    // What every frame is: a (height, width, 3) uint8 image, RGB, padded rows.
    const bips::Descriptor rgb = bips::Descriptor::image(height, width, 3, bips::DType::U8)
                                     .strides({static_cast<int64_t>(stride), 3, 1})
                                     .format("RGB");
    std::signal(SIGINT, [](int) { stop = 1; });
    std::signal(SIGTERM, [](int) { stop = 1; });
    try {
        bips::Options opts(4, frame_bytes);
        opts.policy(block ? BIPS_POLICY_BLOCK : BIPS_POLICY_DROP_OLDEST)
            .payload_type("image/rgb8", 1);  // consumers may require it when they open
        bips::Producer producer(channel, opts);
        std::printf("capture_producer: channel %s, %ux%u RGB24, stride %u, %.1f fps, %s\n", channel.c_str(),
                    width, height, stride, fps, block ? "block" : "drop-oldest");
        std::fflush(stdout);
        while (!stop && producer.consumer_count() < wait_consumers)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        const auto period = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(1.0 / fps));
        auto next_frame = std::chrono::steady_clock::now();
        for (uint32_t t = 0; !stop && (frames == 0 || t < frames); t++) {
            std::this_thread::sleep_until(next_frame);
            next_frame += period;
            bips::SampleMut frame = producer.loan();  // a free buffer in shared memory
            draw(frame.data(), width, height, stride, t);  // "capture" straight into it
            frame.set_size(frame_bytes);
            frame.set_descriptor(rgb);  // what the bytes are (travels with the frame)
            frame.publish();            // every consumer sees it now, no copy made
        }
        std::printf("capture_producer: done\n");
    } catch (const bips::Error& e) {
        std::fprintf(stderr, "capture_producer: %s\n", e.what());
        return 1;
    }
    return 0;
}
