/* The few libjpeg(-turbo) calls tlcv needs that OpenCV does not expose: decoding straight to RGB, and
 * decoding only a region (jpeg_skip_scanlines, jpeg_crop_scanline) for random crops. libjpeg reports
 * errors by longjmp; it never crosses into Rust because the setjmp is in each function here. */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

struct tlcv_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
};

static void tlcv_error_exit(j_common_ptr cinfo) {
    struct tlcv_err *err = (struct tlcv_err *)cinfo->err;
    longjmp(err->jump, 1);
}

/* Warnings (corrupt but decodable data) are counted, not printed: OpenCV decodes such files too. */
static void tlcv_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0) cinfo->err->num_warnings++;
}

static void tlcv_message(j_common_ptr cinfo, char *msg, size_t msg_len) {
    char buffer[JMSG_LENGTH_MAX];
    if (msg == NULL || msg_len == 0) return;
    (*cinfo->err->format_message)(cinfo, buffer);
    snprintf(msg, msg_len, "%s", buffer);
}

/* Result codes, mirrored in jpeg.rs. */
#define TLCV_OK 0
#define TLCV_ERROR 1       /* libjpeg refused the data; the message says why */
#define TLCV_UNSUPPORTED 2 /* a colour space this path does not convert (CMYK, YCCK): use OpenCV */
#define TLCV_BAD_REGION 3  /* the region is outside the (scaled) image */

/* Decodes columns [x, x + w) of rows [y, y + h) of the image scaled by 1/denom (1, 2, 4 or 8) as RGB
 * into out (w * h * 3 bytes). The region is in scaled coordinates. */
int tlcv_jpeg_decode_rgb(const unsigned char *data, size_t len, unsigned int denom, unsigned int x, unsigned int y,
                         unsigned int w, unsigned int h, unsigned char *out, char *msg, size_t msg_len) {
    struct jpeg_decompress_struct cinfo;
    struct tlcv_err err;
    JSAMPARRAY row;
    JDIMENSION xoffset, width, skipped;
    volatile int code = TLCV_OK; /* volatile: set after setjmp */

    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = tlcv_error_exit;
    err.pub.emit_message = tlcv_emit_message;
    if (setjmp(err.jump)) {
        tlcv_message((j_common_ptr)&cinfo, msg, msg_len);
        jpeg_destroy_decompress(&cinfo);
        return TLCV_ERROR;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK || cinfo.num_components == 2 ||
        cinfo.num_components > 3) {
        jpeg_destroy_decompress(&cinfo);
        return TLCV_UNSUPPORTED;
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = denom;
    jpeg_start_decompress(&cinfo);
    if (w == 0 || h == 0 || x > cinfo.output_width || w > cinfo.output_width - x || y > cinfo.output_height ||
        h > cinfo.output_height - y || cinfo.output_components != 3) {
        jpeg_abort_decompress(&cinfo);
        jpeg_destroy_decompress(&cinfo);
        return TLCV_BAD_REGION;
    }
    /* Only the columns of the region go through the inverse DCT and colour conversion; libjpeg widens
     * them to whole iMCUs (xoffset <= x, xoffset + width >= x + w). */
    /* One more column on each side: the upsampler treats the widened region's outer columns as image
     * edges, so they can differ from a whole decode; with the margin they are never ours. */
    xoffset = x > 0 ? x - 1 : 0;
    width = (x + w < cinfo.output_width ? x + w + 1 : cinfo.output_width) - xoffset;
    if (width < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoffset, &width);
    if (xoffset > x || xoffset + width < x + w) {
        jpeg_abort_decompress(&cinfo);
        jpeg_destroy_decompress(&cinfo);
        return TLCV_BAD_REGION;
    }
    row = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE, width * 3, 1);
    /* Rows above the region are entropy-decoded only. */
    while (cinfo.output_scanline < y) {
        skipped = jpeg_skip_scanlines(&cinfo, y - cinfo.output_scanline);
        if (skipped == 0) break;
    }
    if (cinfo.output_scanline != y) {
        snprintf(msg, msg_len, "could not skip to scanline %u", y);
        jpeg_abort_decompress(&cinfo);
        jpeg_destroy_decompress(&cinfo);
        return TLCV_ERROR;
    }
    while (cinfo.output_scanline < y + h) {
        unsigned int out_row = cinfo.output_scanline - y;
        if (jpeg_read_scanlines(&cinfo, row, 1) != 1) {
            code = TLCV_ERROR;
            snprintf(msg, msg_len, "no scanline %u", out_row + y);
            break;
        }
        memcpy(out + (size_t)out_row * w * 3, row[0] + (size_t)(x - xoffset) * 3, (size_t)w * 3);
    }
    /* Rows below the region are never decoded. */
    jpeg_abort_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return code;
}
