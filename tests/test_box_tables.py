"""Box tables: the competitions' CSV layouts, COCO JSON and YOLO txt read into one frame of boxes in pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightning_cv.errors import DataError
from lightning_cv.io.box_tables import box_arrays, image_key, read_box_table, read_coco, read_yolo


def write(path, text):
    path.write_text(text)
    return path


def test_global_wheat_bbox_strings_are_xywh_and_width_height_are_the_image_size(tmp_path):
    csv = write(tmp_path / "train.csv", "image_id,width,height,bbox,source\n"
                "b6ab77fd7,1024,1024,\"[834.0, 222.0, 56.0, 36.0]\",usask_1\n"
                "b6ab77fd7,1024,1024,\"[226.0, 548.0, 130.0, 58.0]\",usask_1\n"
                "b53afdf5c,1024,1024,\"[988.0, 781.0, 36.0, 96.0]\",arvalis_1\n")
    table = read_box_table(csv)
    assert table.format == "bbox column [x, y, w, h], one class"
    assert table.classes == ["object"] and table.no_finding is None
    assert table.image_ids == ["b6ab77fd7", "b53afdf5c"]
    got = table.boxes_of("b6ab77fd7.jpg")  # a file name finds its stem's boxes
    # x_max = x + w: 834 + 56 = 890, y_max = 222 + 36 = 258; 226 + 130 = 356, 548 + 58 = 606
    np.testing.assert_array_equal(got["boxes"], [[834, 222, 890, 258], [226, 548, 356, 606]])
    assert got["boxes"].dtype == np.float32 and got["labels"].tolist() == [0, 0]
    empty = table.boxes_of("not-listed")
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == np.int64


def test_vinbigdata_readers_classes_and_no_finding_rows(tmp_path):
    csv = write(tmp_path / "train.csv", "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
                "a,No finding,14,R1,,,,\n"
                "b,Pleural effusion,10,R3,5,5,9,9\n"
                "b,Aortic enlargement,0,R2,10,20,30,40\n")
    table = read_box_table(csv)
    assert table.format == "x_min..y_max columns, class column class_id, reader column rad_id, no-finding class 14"
    # ids sort as numbers ("10" after "0"), and 14 (only on rows without a box) is not a class
    assert table.classes == ["0", "10"] and table.no_finding == "14"
    assert table.frame["label"].tolist() == [-1, 1, 0]
    assert table.frame["reader"].tolist() == ["R1", "R3", "R2"]
    assert table.image_ids == ["a", "b"]
    assert table.boxes_of("a")["boxes"].shape == (0, 4)  # listed, without a box
    np.testing.assert_array_equal(table.boxes_of("b")["labels"], [1, 0])


def test_great_barrier_reef_lists_boxes_per_image(tmp_path):
    csv = write(tmp_path / "train.csv", "video_id,video_frame,image_id,annotations\n"
                "0,15,0-15,[]\n"
                "0,16,0-16,\"[{'x': 559, 'y': 213, 'width': 50, 'height': 32}, {'x': 1, 'y': 2, 'width': 3, 'height': 4}]\"\n")
    table = read_box_table(csv)
    assert table.format == "annotations column of x, y, width, height lists, one class"
    assert table.image_ids == ["0-15", "0-16"] and table.boxes_of("0-15")["boxes"].shape == (0, 4)
    # 559 + 50 = 609, 213 + 32 = 245; 1 + 3 = 4, 2 + 4 = 6
    np.testing.assert_array_equal(table.boxes_of("0-16")["boxes"], [[559, 213, 609, 245], [1, 2, 4, 6]])
    with pytest.raises(DataError, match=r"row 2: annotations '\[\{x: 1\}\]' is not a list"):
        read_box_table(write(tmp_path / "bad.csv", "image_id,annotations\na,[{x: 1}]\n"))


@pytest.mark.parametrize(("header", "row", "expected"), [
    ("patientId,x,y,width,height,Target", "p1,10,20,30,40,1", [10, 20, 40, 60]),  # RSNA: x + width, y + height
    ("image,xmin,ymin,xmax,ymax,label", "p1,10,20,30,40,cat", [10, 20, 30, 40]),
    ("file_name,X1,Y1,X2,Y2", "p1.png,10,20,30,40", [10, 20, 30, 40]),  # names are case-insensitive
])
def test_box_columns_are_found_by_name(tmp_path, header, row, expected):
    table = read_box_table(write(tmp_path / "t.csv", f"{header}\n{row}\n"))
    np.testing.assert_array_equal(table.frame[["x_min", "y_min", "x_max", "y_max"]].to_numpy()[0], expected)
    assert table.boxes_of("p1")["boxes"].shape == (1, 4)


def test_named_columns_need_a_format_unless_their_names_say(tmp_path):
    csv = write(tmp_path / "t.csv", "img,a,b,c,d\np,1,2,3,4\n")
    with pytest.raises(DataError, match="pass box_format"):
        read_box_table(csv, id_col="img", box_cols=["a", "b", "c", "d"])
    table = read_box_table(csv, id_col="img", box_cols=["a", "b", "c", "d"], box_format="xywh")
    np.testing.assert_array_equal(table.boxes_of("p")["boxes"], [[1, 2, 4, 6]])


@pytest.mark.parametrize(("rows", "message"), [
    ("a,12,0,10,5\n", r"t.csv: row 2: x_max 10 < x_min 12"),
    ("a,0,0,1,1\na,0,9,5,2\n", r"row 3: y_max 2 < y_min 9"),
    ("a,0,0,one,1\n", r"row 2: x_max 'one' is not a number"),
    ("a,0,,1,1\n", r"row 2: y_min empty but not the other coordinates"),
])
def test_malformed_rows_name_the_file_row_and_column(tmp_path, rows, message):
    csv = write(tmp_path / "t.csv", "image_id,x_min,y_min,x_max,y_max\n" + rows)
    with pytest.raises(DataError, match=message):
        read_box_table(csv)


def test_other_malformed_tables(tmp_path):
    with pytest.raises(DataError, match=r"row 2: w -3 < 0"):
        read_box_table(write(tmp_path / "a.csv", "image_id,x,y,w,h\na,0,0,-3,1\n"))
    with pytest.raises(DataError, match=r"row 2: bbox '\[1, 2, 3\]' is not four numbers"):
        read_box_table(write(tmp_path / "b.csv", "image_id,bbox\na,\"[1, 2, 3]\"\n"))
    with pytest.raises(DataError, match="no box columns"):
        read_box_table(write(tmp_path / "c.csv", "image_id,label\na,1\n"))
    with pytest.raises(DataError, match="no image id column"):
        read_box_table(write(tmp_path / "d.csv", "thing,x,y,w,h\na,0,0,1,1\n"))
    with pytest.raises(DataError, match="expected one 'no finding' class"):
        read_box_table(write(tmp_path / "e.csv", "image_id,class_id,x,y,w,h\na,14,,,,\nb,15,,,,\n"))


def test_coco_json_uses_file_names_and_category_order(tmp_path):
    coco = {"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 8, "file_name": "b.jpg"}],
            "categories": [{"id": 3, "name": "ship"}, {"id": 1, "name": "car"}],
            "annotations": [{"image_id": 7, "category_id": 3, "bbox": [10, 20, 5, 6]}]}
    table = read_coco(write(tmp_path / "c.json", json.dumps(coco)))
    assert table.classes == ["car", "ship"]  # by category id: 1, 3
    got = table.boxes_of("a")  # the stem finds "a.jpg"
    np.testing.assert_array_equal(got["boxes"], [[10, 20, 15, 26]])  # 10 + 5, 20 + 6
    assert got["labels"].tolist() == [1]
    assert table.image_ids == ["a.jpg", "b.jpg"]  # b.jpg listed without a box
    coco["annotations"][0]["category_id"] = 9
    with pytest.raises(DataError, match=r"annotations\[0\]: category_id 9"):
        read_coco(write(tmp_path / "d.json", json.dumps(coco)))


def test_yolo_labels_are_scaled_to_each_image(tmp_path):
    (tmp_path / "labels").mkdir()
    write(tmp_path / "labels" / "a.txt", "1 0.5 0.25 0.2 0.5\n")
    table = read_yolo(tmp_path / "labels", {"a.png": (100, 200), "b.png": (50, 50)})
    # width 200, height 100: cx 100, cy 25, w 40, h 50 -> x 80..120, y 0..50
    np.testing.assert_allclose(table.boxes_of("a.png")["boxes"], [[80, 0, 120, 50]])
    assert table.classes == ["0", "1"] and table.boxes_of("b.png")["boxes"].shape == (0, 4)
    with pytest.raises(DataError, match="class 1 in the labels but only 1 classes"):
        read_yolo(tmp_path / "labels", {"a.png": (100, 200)}, classes=["wheat"])


def test_image_key_and_box_arrays():
    assert image_key("dir/abc.JPG") == "abc" and image_key("1.2.840.113") == "1.2.840.113"
    import torch

    got = box_arrays({"boxes": torch.tensor([[1, 2, 3, 4]]), "labels": torch.tensor([2])})
    assert got["boxes"].dtype == np.float32 and got["scores"].tolist() == [1.0]  # truths score 1
